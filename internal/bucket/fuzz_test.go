package bucket_test

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/openshift/oadp-imagestreams-backup/internal/bucket"
)

// A location's config keys and credentials file are text from a BackupStorageLocation and a
// Secret. Opening must not panic, must accept only well-formed settings, and must never put
// the secret in an error, which ends up in conditions and events. Open makes no request, so
// this runs offline.
func FuzzOpen(f *testing.F) {
	f.Add("aws", "eu-west-1", "", "true", "false", "default", "wJalrXUtnFEMI/K7MDENG", "")
	f.Add("aws", "", "http://127.0.0.1:9000", "", "", "", "SECRETSECRET", "aws_session_token = x")
	f.Add("aws", "r", "::not a url", "yes please", "1", "missing", "SECRETSECRET", "[other]")
	f.Add("aws", "r", "", "", "", "default", "line\nbreak=SECRETSECRET", "not a key file")
	f.Add("azure", "account", "https://account.blob.core.windows.net", "", "", "", "bm90IGEga2V5", "# comment")
	f.Add("azure", "a", "", "", "maybe", "", "not base64 SECRETSECRET", "AZURE_CLIENT_ID=\"x\"")
	f.Fuzz(func(t *testing.T, provider, region, endpoint, pathStyle, insecure, profile, secret, extra string) {
		cfg := bucket.Config{Provider: provider, Bucket: "b", Config: map[string]string{}}
		switch provider {
		case "aws":
			cfg.Config = map[string]string{"region": region, "s3Url": endpoint, "s3ForcePathStyle": pathStyle, "insecureSkipTLSVerify": insecure, "profile": profile}
			p := profile
			if p == "" {
				p = "default"
			}
			cfg.Credentials = fmt.Appendf(nil, "[%s]\naws_access_key_id = AKIAFUZZ\naws_secret_access_key = %s\n%s\n", p, secret, extra)
		case "azure":
			cfg.Config = map[string]string{"storageAccount": region, "storageAccountURI": endpoint, "insecureSkipTLSVerify": insecure}
			cfg.Credentials = fmt.Appendf(nil, "AZURE_STORAGE_ACCOUNT_ACCESS_KEY=%s\n%s\n", secret, extra)
		default:
			return // gcp reads a JSON key; file and mem take no settings
		}
		b, err := bucket.Open(context.Background(), cfg)
		if err != nil {
			others := provider + region + endpoint + pathStyle + insecure + profile + extra + "AKIAFUZZ"
			if len(secret) >= 8 && !strings.Contains(others, secret) && strings.Contains(err.Error(), secret) {
				t.Fatalf("the error reveals the secret: %v", err)
			}
			return
		}
		defer b.Close()
		for _, key := range []string{"s3ForcePathStyle", "insecureSkipTLSVerify"} {
			if v := cfg.Config[key]; v != "" {
				if _, err := strconv.ParseBool(v); err != nil {
					t.Fatalf("Open accepted %s %q", key, v)
				}
			}
		}
		if provider == "aws" && region == "" && endpoint == "" {
			t.Fatalf("Open accepted aws without a region or endpoint")
		}
		if provider == "azure" && region == "" {
			t.Fatalf("Open accepted azure without a storage account")
		}
	})
}
