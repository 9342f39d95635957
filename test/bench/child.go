package main

import (
	"context"
	"encoding/json"
	"flag"
	"log"
	"os"
	"runtime/pprof"
	"strings"

	"golang.org/x/sync/errgroup"

	oadpv1alpha1 "github.com/openshift/oadp-imagestreams-backup/api/v1alpha1"
	"github.com/openshift/oadp-imagestreams-backup/internal/bucket"
	"github.com/openshift/oadp-imagestreams-backup/internal/copier"
	"github.com/openshift/oadp-imagestreams-backup/internal/imagestore"
	"github.com/openshift/oadp-imagestreams-backup/internal/transfer"
)

// storeFlags say where the child's store is: a file bucket directory, or a bucket of the S3
// server at -s3 with the credentials file -s3-credentials, under -prefix.
type storeFlags struct{ bucket, s3, credentials, prefix, cpuProfile *string }

func addStoreFlags(fs *flag.FlagSet) storeFlags {
	return storeFlags{
		bucket:      fs.String("bucket", "", "file bucket directory, or the S3 bucket's name with -s3"),
		s3:          fs.String("s3", "", "S3 endpoint URL; a file bucket when empty"),
		credentials: fs.String("s3-credentials", "", "AWS shared credentials file for -s3"),
		prefix:      fs.String("prefix", "", "prefix of the store in the bucket"),
		cpuProfile:  fs.String("cpuprofile", "", "write a CPU profile of the run to this file"),
	}
}

// profile starts the CPU profile -cpuprofile asks for; stop ends it.
func (f storeFlags) profile() (stop func()) {
	if *f.cpuProfile == "" {
		return func() {}
	}
	out, err := os.Create(*f.cpuProfile)
	if err != nil {
		log.Fatal(err)
	}
	if err := pprof.StartCPUProfile(out); err != nil {
		log.Fatal(err)
	}
	return func() { pprof.StopCPUProfile(); _ = out.Close() }
}

func (f storeFlags) open(ctx context.Context) *imagestore.Store {
	cfg := bucket.Config{Provider: "file", Bucket: *f.bucket}
	if *f.s3 != "" {
		creds, err := os.ReadFile(*f.credentials)
		if err != nil {
			log.Fatal(err)
		}
		cfg = bucket.Config{Provider: "aws", Bucket: *f.bucket, Credentials: creds,
			Config: map[string]string{"region": "us-east-1", "s3Url": *f.s3, "s3ForcePathStyle": "true"}}
	}
	b, err := bucket.Open(ctx, cfg)
	if err != nil {
		log.Fatal(err)
	}
	return imagestore.New(b, *f.prefix)
}

// runCopy backs the references up into a bucket the way the worker does: images copied
// concurrently, blobs sharing one Jobs limit, the index written last.
func runCopy(args []string) {
	fs := flag.NewFlagSet(cmdCopy, flag.ExitOnError)
	where := addStoreFlags(fs)
	jobs := fs.Int("jobs", copier.DefaultJobs, "blobs at once")
	_ = fs.Parse(args)
	defer where.profile()()
	ctx := context.Background()
	store := where.open(ctx)
	defer store.Close()
	c, err := copier.New(store, copier.Options{Jobs: *jobs})
	if err != nil {
		log.Fatal(err)
	}
	entries := make([]imagestore.Entry, fs.NArg())
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(*jobs)
	for i, arg := range fs.Args() {
		g.Go(func() error {
			ref, err := c.ParseReference(arg)
			if err != nil {
				return err
			}
			d, err := c.Copy(gctx, ref)
			parts := strings.Split(ref.Context().RepositoryStr(), "/")
			entries[i] = imagestore.Entry{Namespace: parts[0], ImageStream: parts[len(parts)-1], Tags: []string{"latest"}, Reference: arg, Descriptor: d}
			return err
		})
	}
	if err := g.Wait(); err != nil {
		log.Fatal(err)
	}
	if err := store.WriteIndex(ctx, "bench", entries, imagestore.IndexMeta{}); err != nil {
		log.Fatal(err)
	}
	_ = json.NewEncoder(os.Stdout).Encode(c.Stats())
}

// runRestore pushes every image of the bench backup into a registry with the worker's restore
// job: imagestreams in parallel, Jobs at once, each image of one in order.
func runRestore(args []string) {
	fs := flag.NewFlagSet(cmdRestore, flag.ExitOnError)
	where := addStoreFlags(fs)
	registry := fs.String("registry", "", "registry host:port")
	jobs := fs.Int("jobs", copier.DefaultJobs, "blobs at once")
	_ = fs.Parse(args)
	defer where.profile()()
	ctx := context.Background()
	store := where.open(ctx)
	backup, err := store.ReadBackup(ctx, "bench")
	if err != nil {
		log.Fatal(err)
	}
	job := transfer.NewRestore(store, transfer.RestoreSpec{Backup: backup, Restore: &oadpv1alpha1.ImageStreamsRestoreSpec{}, Host: *registry,
		Options: copier.Options{Jobs: *jobs}})
	defer job.Close()
	res := job.Run(ctx, func(int64, string) {})
	if res.Outcome != transfer.Completed {
		log.Fatalf("restore %v: %s %v", res.Outcome, res.Message, res.Failures)
	}
	_ = json.NewEncoder(os.Stdout).Encode(res.Progress)
}
