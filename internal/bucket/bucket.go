// Package bucket opens gocloud.dev buckets for object store locations described the way Velero
// describes them: a provider name, a bucket, the provider's config keys and a credentials file.
package bucket

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"

	"gocloud.dev/blob"
	"gocloud.dev/blob/fileblob"
	"gocloud.dev/blob/memblob"
)

// Config is an object store location.
type Config struct {
	// Provider is aws, gcp, azure, file or mem; Velero's "velero.io/" prefix is accepted.
	Provider string
	// Bucket is the bucket's name; for file, a directory.
	Bucket string
	// Config holds provider settings under the keys Velero's provider plugins read.
	Config map[string]string
	// Credentials is the content of the provider's credentials file (an AWS shared credentials
	// file, a GCP service account key, or Azure's environment file). Empty means the
	// provider's default chain (environment, workload identity).
	Credentials []byte
	// CACert is a PEM bundle that verifies the object store's TLS certificate.
	CACert []byte
}

// Providers that keep objects on this machine.
const (
	providerFile = "file"
	providerMem  = "mem"
)

// ErrUnknownProvider is returned for a provider this package cannot open.
var ErrUnknownProvider = errors.New("unknown object store provider")

// Open opens the bucket. Keys are not prefixed: imagestore.New adds the location's prefix.
func Open(ctx context.Context, cfg Config) (*blob.Bucket, error) {
	if cfg.Bucket == "" && cfg.provider() != providerMem {
		return nil, errors.New("object store location names no bucket")
	}
	switch cfg.provider() {
	case "aws":
		return openS3(ctx, cfg)
	case "gcp":
		return openGCS(ctx, cfg)
	case "azure":
		return openAzure(ctx, cfg)
	case providerFile:
		// metadata=skip: no sidecar files and no MD5 of every byte; the store names blobs by
		// their sha256 and checks it itself. NoTempDir: a write goes to a temporary file
		// beside its key, then is renamed; in os.TempDir, on another filesystem than a mounted
		// volume, the rename would fail with EXDEV, and a full volume would go unnoticed
		// until then.
		return fileblob.OpenBucket(cfg.Bucket, &fileblob.Options{Metadata: fileblob.MetadataDontWrite, CreateDir: true, NoTempDir: true})
	case providerMem:
		return memblob.OpenBucket(nil), nil
	}
	return nil, fmt.Errorf("%w %q: want aws, gcp, azure or file", ErrUnknownProvider, cfg.Provider)
}

func (c Config) provider() string { return strings.TrimPrefix(c.Provider, "velero.io/") }

// TakesCredentials reports whether the provider authenticates: file and mem do not.
func (c Config) TakesCredentials() bool {
	p := c.provider()
	return p != providerFile && p != providerMem
}

// SameTrust reports whether c verifies its endpoint's TLS certificate as o does: a location
// that skips verification, or trusts a CA bundle of its own, could hand its credentials to a
// server in the middle.
func (c Config) SameTrust(o Config) bool {
	ci, _ := c.bool("insecureSkipTLSVerify")
	oi, _ := o.bool("insecureSkipTLSVerify")
	return ci == oi && bytes.Equal(c.CACert, o.CACert)
}

// Endpoint names the service that the location's requests, and so its credentials, go to:
// the provider and, where the config can point elsewhere, the URL it points at (aws s3Url,
// azure storageAccountURI or the account's default URL).
func (c Config) Endpoint() string {
	p := c.provider()
	switch p {
	case "aws":
		if u := strings.TrimSuffix(c.Config["s3Url"], "/"); u != "" {
			return p + " " + u
		}
	case "azure":
		u := c.Config["storageAccountURI"]
		if u == "" {
			u = fmt.Sprintf("https://%s.blob.core.windows.net", c.Config["storageAccount"])
		}
		return p + " " + strings.TrimSuffix(u, "/")
	}
	return p
}

func (c Config) bool(key string) (bool, error) {
	v, ok := c.Config[key]
	if !ok || v == "" {
		return false, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, fmt.Errorf("config %s: %q is not a boolean", key, v)
	}
	return b, nil
}

// httpClient verifies TLS against the system roots plus CACert, unless insecureSkipTLSVerify.
func (c Config) httpClient() (*http.Client, error) {
	insecure, err := c.bool("insecureSkipTLSVerify")
	if err != nil {
		return nil, err
	}
	tlsConfig, err := TLSConfig(c.CACert, insecure)
	if err != nil {
		return nil, err
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = tlsConfig
	return &http.Client{Transport: tr}, nil
}

// ErrNoPEMCertificate is returned by TLSConfig for a CA bundle without a certificate in it.
var ErrNoPEMCertificate = errors.New("CA bundle holds no PEM certificate")

// TLSConfig is the client TLS configuration for object stores and registries alike: it trusts
// the system roots plus caCert, and skips verification only when insecure. Its only error is
// ErrNoPEMCertificate.
func TLSConfig(caCert []byte, insecure bool) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: insecure} //nolint:gosec // insecure is an explicit opt-in
	if len(caCert) > 0 {
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(caCert) {
			return nil, ErrNoPEMCertificate
		}
		cfg.RootCAs = pool
	}
	return cfg, nil
}

// withCredentialsFile writes creds to a private temporary file for SDKs that read credentials
// only from files, and removes it once f returns.
func withCredentialsFile(creds []byte, f func(path string) error) error {
	file, err := os.CreateTemp("", "credentials-*")
	if err != nil {
		return err
	}
	defer os.Remove(file.Name())
	if _, err := file.Write(creds); err != nil {
		file.Close()
		return err
	}
	if err := file.Close(); err != nil {
		return err
	}
	return f(file.Name())
}
