package bucket

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"gocloud.dev/blob"
	"gocloud.dev/blob/s3blob"
)

// maxIdleConnsPerHost is how many idle connections to the S3 endpoint a bucket keeps.
const maxIdleConnsPerHost = 64

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
	hc := awshttp.NewBuildableClient().WithTransportOptions(func(tr *http.Transport) {
		tr.TLSClientConfig = tlsConfig
		// A copy of many small images keeps dozens of requests in flight; with the SDK's 10
		// idle connections a host, most would end in a new TLS handshake.
		tr.MaxIdleConnsPerHost = maxIdleConnsPerHost
	})
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
		config.WithRetryer(newRetryer),
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

// newRetryer retries more than the SDK's three attempts, and without its client-side retry
// quota. A backup writes thousands of objects; at three attempts an S3 endpoint that fails one
// request in ten loses one in a thousand, each failing an image, and the quota, which retries
// drain faster than successes refill it while such faults last, would then refuse every retry
// for the rest of the backup. Every request the store sends can be retried: bodies are in
// memory (the transfer manager buffers each part) and writes are idempotent, named by digest.
func newRetryer() aws.Retryer {
	return retry.NewStandard(func(o *retry.StandardOptions) {
		o.MaxAttempts = 8
		// Seven waits of at most 5s: a dead endpoint still fails a request within a minute.
		o.MaxBackoff = 5 * time.Second
		o.RateLimiter = ratelimit.None
	})
}
