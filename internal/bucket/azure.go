package bucket

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"strings"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"
	"gocloud.dev/blob"
	"gocloud.dev/blob/azureblob"
)

// openAzure reads the config keys velero-plugin-for-microsoft-azure reads (storageAccount,
// storageAccountURI) and its credentials file of KEY=value lines: a storage account access key
// (AZURE_STORAGE_ACCOUNT_ACCESS_KEY) or a service principal (AZURE_TENANT_ID, AZURE_CLIENT_ID,
// AZURE_CLIENT_SECRET); the default Azure credential chain when neither is given.
func openAzure(ctx context.Context, cfg Config) (*blob.Bucket, error) {
	account := cfg.Config["storageAccount"]
	if account == "" {
		return nil, fmt.Errorf("config storageAccount is required for provider azure")
	}
	serviceURL := cfg.Config["storageAccountURI"]
	if serviceURL == "" {
		serviceURL = fmt.Sprintf("https://%s.blob.core.windows.net/", account)
	}
	containerURL := strings.TrimSuffix(serviceURL, "/") + "/" + cfg.Bucket
	hc, err := cfg.httpClient()
	if err != nil {
		return nil, err
	}
	opts := &container.ClientOptions{ClientOptions: azcore.ClientOptions{Transport: hc}}
	env := parseEnvFile(cfg.Credentials)
	var client *container.Client
	switch {
	case env["AZURE_STORAGE_ACCOUNT_ACCESS_KEY"] != "":
		key, err := container.NewSharedKeyCredential(account, env["AZURE_STORAGE_ACCOUNT_ACCESS_KEY"])
		if err != nil {
			return nil, fmt.Errorf("azure storage account key: %w", err)
		}
		client, err = container.NewClientWithSharedKeyCredential(containerURL, key, opts)
		if err != nil {
			return nil, err
		}
	default:
		var cred azcore.TokenCredential
		if env["AZURE_CLIENT_SECRET"] != "" {
			cred, err = azidentity.NewClientSecretCredential(env["AZURE_TENANT_ID"], env["AZURE_CLIENT_ID"], env["AZURE_CLIENT_SECRET"],
				&azidentity.ClientSecretCredentialOptions{ClientOptions: policy.ClientOptions{Transport: hc}})
		} else {
			cred, err = azidentity.NewDefaultAzureCredential(nil)
		}
		if err != nil {
			return nil, fmt.Errorf("azure credentials: %w", err)
		}
		client, err = container.NewClient(containerURL, cred, opts)
		if err != nil {
			return nil, err
		}
	}
	return azureblob.OpenBucket(ctx, client, nil)
}

func parseEnvFile(b []byte) map[string]string {
	out := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if k, v, ok := strings.Cut(line, "="); ok {
			out[strings.TrimSpace(k)] = strings.Trim(strings.TrimSpace(v), `"`)
		}
	}
	return out
}
