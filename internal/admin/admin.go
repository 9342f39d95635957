// Package admin implements the worker's operator subcommands, which act on a backup location
// directly: list its backups, verify one, export one as an OCI layout, collect garbage.
package admin

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/openshift/oadp-imagestreams-backup/internal/bucket"
	"github.com/openshift/oadp-imagestreams-backup/internal/imagestore"
)

// The subcommands.
const (
	cmdList   = "ls"
	cmdVerify = "verify"
	cmdExport = "export"
	cmdGC     = "gc"
)

// Commands names the subcommands Run knows.
var Commands = []string{cmdList, cmdVerify, cmdExport, cmdGC}

// Run runs subcommand cmd with args, writing its report to out.
func Run(ctx context.Context, cmd string, args []string, out io.Writer) error {
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	fs.SetOutput(out)
	var cfg bucket.Config
	var prefix, config, credentials, backup, dir string
	fs.StringVar(&cfg.Provider, "provider", "aws", "object store provider: aws, gcp, azure or file")
	fs.StringVar(&cfg.Bucket, "bucket", "", "bucket name (file: a directory)")
	fs.StringVar(&prefix, "prefix", "", "the location's prefix in the bucket")
	fs.StringVar(&config, "config", "", "provider settings as Velero names them, key=value,key=value (e.g. region=us-east-1,s3Url=https://...)")
	fs.StringVar(&credentials, "credentials-file", "", "the provider's credentials file, as in Velero's cloud-credentials Secret")
	if cmd == cmdVerify || cmd == cmdExport {
		fs.StringVar(&backup, "backup", "", "the backup's name")
	}
	if cmd == cmdExport {
		fs.StringVar(&dir, "dir", "", "directory to write the OCI image layout into")
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg.Config = map[string]string{}
	for _, kv := range strings.Split(config, ",") {
		if kv == "" {
			continue
		}
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return fmt.Errorf("--config: %q is not key=value", kv)
		}
		cfg.Config[k] = v
	}
	if credentials != "" {
		b, err := os.ReadFile(credentials)
		if err != nil {
			return err
		}
		cfg.Credentials = b
	}
	if (cmd == cmdVerify || cmd == cmdExport) && backup == "" {
		return errors.New("--backup is required")
	}
	if cmd == cmdExport && dir == "" {
		return errors.New("--dir is required")
	}
	b, err := bucket.Open(ctx, cfg)
	if err != nil {
		return err
	}
	store := imagestore.New(b, prefix)
	defer store.Close()

	switch cmd {
	case cmdList:
		names, err := store.Backups(ctx)
		if err != nil {
			return err
		}
		for _, n := range names {
			entries, err := store.ReadIndex(ctx, n)
			if err != nil {
				fmt.Fprintf(out, "%s\t%v\n", n, err)
				continue
			}
			fmt.Fprintf(out, "%s\t%d images\n", n, len(entries))
		}
		return nil
	case cmdVerify:
		rep, err := store.Verify(ctx, backup)
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "backup %s verified: %d images, %d blobs, %d bytes, every digest matches\n", backup, rep.Images, rep.Blobs, rep.Bytes)
		return nil
	case cmdExport:
		if err := store.Export(ctx, backup, dir); err != nil {
			return err
		}
		fmt.Fprintf(out, "backup %s exported to %s\n", backup, dir)
		return nil
	case cmdGC:
		rep, err := store.GC(ctx, 0)
		if err != nil {
			return err
		}
		if rep.Deferred {
			fmt.Fprintf(out, "nothing collected: backups in progress %v\n", rep.Running)
			return nil
		}
		fmt.Fprintf(out, "kept %d blobs of %d backups, deleted %d blobs (%d bytes)\n", rep.Kept, rep.Backups, rep.Deleted, rep.DeletedBytes)
		return nil
	}
	return fmt.Errorf("unknown command %q: want one of %v", cmd, Commands)
}
