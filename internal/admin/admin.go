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
	opts, err := parseFlags(cmd, args, out)
	if err != nil {
		return err
	}
	b, err := bucket.Open(ctx, opts.bucket)
	if err != nil {
		return err
	}
	store := imagestore.New(b, opts.prefix)
	defer store.Close()
	return run(ctx, cmd, store, opts, out)
}

// options are what a subcommand's flags say.
type options struct {
	bucket bucket.Config
	prefix string
	// backup is the backup that verify and export act on.
	backup string
	// dir is where export writes.
	dir string
}

// parseFlags reads cmd's flags from args and checks that those cmd needs are given; flag
// errors and usage go to out.
func parseFlags(cmd string, args []string, out io.Writer) (options, error) {
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	fs.SetOutput(out)
	var o options
	var config, credentials string
	fs.StringVar(&o.bucket.Provider, "provider", "aws", "object store provider: aws, gcp, azure or file")
	fs.StringVar(&o.bucket.Bucket, "bucket", "", "bucket name (file: a directory)")
	fs.StringVar(&o.prefix, "prefix", "", "the location's prefix in the bucket")
	fs.StringVar(&config, "config", "", "provider settings as Velero names them, key=value,key=value (e.g. region=us-east-1,s3Url=https://...)")
	fs.StringVar(&credentials, "credentials-file", "", "the provider's credentials file, as in Velero's cloud-credentials Secret")
	if cmd == cmdVerify || cmd == cmdExport {
		fs.StringVar(&o.backup, "backup", "", "the backup's name")
	}
	if cmd == cmdExport {
		fs.StringVar(&o.dir, "dir", "", "directory to write the OCI image layout into")
	}
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	var err error
	if o.bucket.Config, err = parseConfig(config); err != nil {
		return o, err
	}
	if credentials != "" {
		if o.bucket.Credentials, err = os.ReadFile(credentials); err != nil {
			return o, err
		}
	}
	if (cmd == cmdVerify || cmd == cmdExport) && o.backup == "" {
		return o, errors.New("--backup is required")
	}
	if cmd == cmdExport && o.dir == "" {
		return o, errors.New("--dir is required")
	}
	return o, nil
}

// parseConfig reads --config, key=value pairs separated by commas.
func parseConfig(s string) (map[string]string, error) {
	cfg := map[string]string{}
	for _, kv := range strings.Split(s, ",") {
		if kv == "" {
			continue
		}
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return nil, fmt.Errorf("--config: %q is not key=value", kv)
		}
		cfg[k] = v
	}
	return cfg, nil
}

// run carries out cmd on store.
func run(ctx context.Context, cmd string, store *imagestore.Store, o options, out io.Writer) error {
	switch cmd {
	case cmdList:
		return list(ctx, store, out)
	case cmdVerify:
		return verify(ctx, store, o.backup, out)
	case cmdExport:
		return export(ctx, store, o.backup, o.dir, out)
	case cmdGC:
		return collect(ctx, store, out)
	}
	return fmt.Errorf("unknown command %q: want one of %v", cmd, Commands)
}

// list prints each backup with its number of images, or why its index cannot be read.
func list(ctx context.Context, store *imagestore.Store, out io.Writer) error {
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
}

func verify(ctx context.Context, store *imagestore.Store, backup string, out io.Writer) error {
	rep, err := store.Verify(ctx, backup)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "backup %s verified: %d images, %d blobs, %d bytes, every digest matches\n", backup, rep.Images, rep.Blobs, rep.Bytes)
	return nil
}

func export(ctx context.Context, store *imagestore.Store, backup, dir string, out io.Writer) error {
	if err := store.Export(ctx, backup, dir); err != nil {
		return err
	}
	fmt.Fprintf(out, "backup %s exported to %s\n", backup, dir)
	return nil
}

// collect runs a garbage collection with the default staleness time.
func collect(ctx context.Context, store *imagestore.Store, out io.Writer) error {
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
