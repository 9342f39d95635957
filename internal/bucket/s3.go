package bucket

import (
	"context"
	"fmt"
	"net/http"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"gocloud.dev/blob"
	"gocloud.dev/blob/s3blob"
)

// openS3 reads the config keys velero-plugin-for-aws reads: region, s3Url, s3ForcePathStyle,
// insecureSkipTLSVerify and profile (default "default"), with credentials from an AWS shared
// credentials file.
func openS3(ctx context.Context, cfg Config) (*blob.Bucket, error) {
	pathStyle, err := cfg.bool("s3ForcePathStyle")
	if err != nil {
		return nil, err
	}
	insecure, err := cfg.bool("insecureSkipTLSVerify")
	if err != nil {
		return nil, err
	}
	tlsConfig, err := TLSConfig(cfg.CACert, insecure)
	if err != nil {
		return nil, err
	}
	hc := awshttp.NewBuildableClient().WithTransportOptions(func(tr *http.Transport) { tr.TLSClientConfig = tlsConfig })
	region := cfg.Config["region"]
	if region == "" {
		if cfg.Config["s3Url"] == "" {
			return nil, fmt.Errorf("config region is required for provider aws")
		}
		region = "us-east-1" // what S3-compatible servers answer to when no region is given
	}
	profile := cfg.Config["profile"]
	if profile == "" {
		profile = "default"
	}
	opts := []func(*config.LoadOptions) error{
		config.WithRegion(region),
		config.WithHTTPClient(hc),
		// S3-compatible servers often refuse the SDK's default CRC checksums; the store checks
		// sha256 of every object itself.
		config.WithRequestChecksumCalculation(aws.RequestChecksumCalculationWhenRequired),
		config.WithResponseChecksumValidation(aws.ResponseChecksumValidationWhenRequired),
	}
	var awsCfg aws.Config
	load := func(o ...func(*config.LoadOptions) error) error {
		var err error
		awsCfg, err = config.LoadDefaultConfig(ctx, append(opts, o...)...)
		return err
	}
	if len(cfg.Credentials) > 0 {
		err = withCredentialsFile(cfg.Credentials, func(path string) error {
			if err := load(config.WithSharedCredentialsFiles([]string{path}), config.WithSharedConfigProfile(profile)); err != nil {
				return err
			}
			// Resolve now, while the file exists, so a malformed file fails here with a clear error.
			_, err := awsCfg.Credentials.Retrieve(ctx)
			return err
		})
	} else {
		err = load()
	}
	if err != nil {
		return nil, fmt.Errorf("loading AWS credentials (profile %q): %w", profile, err)
	}
	client := s3.NewFromConfig(awsCfg, func(o *s3.Options) {
		if u := cfg.Config["s3Url"]; u != "" {
			o.BaseEndpoint = aws.String(u)
		}
		o.UsePathStyle = pathStyle
	})
	return s3blob.OpenBucket(ctx, client, cfg.Bucket, nil)
}
