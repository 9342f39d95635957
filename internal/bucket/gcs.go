package bucket

import (
	"context"
	"fmt"

	"gocloud.dev/blob"
	"gocloud.dev/blob/gcsblob"
	"gocloud.dev/gcp"
	"golang.org/x/oauth2/google"
)

// openGCS reads a service account key as velero-plugin-for-gcp does, or the default
// credentials when none is given.
func openGCS(ctx context.Context, cfg Config) (*blob.Bucket, error) {
	const scope = "https://www.googleapis.com/auth/devstorage.read_write"
	var creds *google.Credentials
	var err error
	if len(cfg.Credentials) > 0 {
		creds, err = google.CredentialsFromJSONWithType(ctx, cfg.Credentials, google.ServiceAccount, scope)
	} else {
		creds, err = google.FindDefaultCredentials(ctx, scope)
	}
	if err != nil {
		return nil, fmt.Errorf("loading GCP credentials: %w", err)
	}
	hc, err := cfg.httpClient()
	if err != nil {
		return nil, err
	}
	client, err := gcp.NewHTTPClient(hc.Transport, gcp.CredentialsTokenSource(creds))
	if err != nil {
		return nil, err
	}
	return gcsblob.OpenBucket(ctx, client, cfg.Bucket, nil)
}
