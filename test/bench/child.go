package main

import (
	"context"
	"encoding/json"
	"flag"
	"log"
	"os"
	"strings"

	"golang.org/x/sync/errgroup"

	"github.com/openshift/oadp-imagestreams-backup/internal/bucket"
	"github.com/openshift/oadp-imagestreams-backup/internal/copier"
	"github.com/openshift/oadp-imagestreams-backup/internal/imagestore"
)

func openStore(ctx context.Context, dir string) *imagestore.Store {
	b, err := bucket.Open(ctx, bucket.Config{Provider: "file", Bucket: dir})
	if err != nil {
		log.Fatal(err)
	}
	return imagestore.New(b, "")
}

// runCopy backs the references up into a file bucket the way the worker does: images copied
// concurrently, blobs sharing one Jobs limit, the index written last.
func runCopy(args []string) {
	fs := flag.NewFlagSet("copy", flag.ExitOnError)
	dir := fs.String("bucket", "", "file bucket directory")
	jobs := fs.Int("jobs", copier.DefaultJobs, "blobs at once")
	_ = fs.Parse(args)
	ctx := context.Background()
	store := openStore(ctx, *dir)
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

// runRestore pushes every image of the bench backup into a registry.
func runRestore(args []string) {
	fs := flag.NewFlagSet("restore", flag.ExitOnError)
	dir := fs.String("bucket", "", "file bucket directory")
	registry := fs.String("registry", "", "registry host:port")
	jobs := fs.Int("jobs", copier.DefaultJobs, "blobs at once")
	_ = fs.Parse(args)
	ctx := context.Background()
	store := openStore(ctx, *dir)
	defer store.Close()
	entries, err := store.ReadIndex(ctx, "bench")
	if err != nil {
		log.Fatal(err)
	}
	p, err := copier.NewPusher(ctx, store, copier.Options{Jobs: *jobs})
	if err != nil {
		log.Fatal(err)
	}
	for _, e := range entries {
		repo, err := p.Repository(*registry + "/" + e.Namespace + "/" + e.ImageStream)
		if err != nil {
			log.Fatal(err)
		}
		if err := p.Push(ctx, e.Descriptor, repo, e.Tags); err != nil {
			log.Fatal(err)
		}
	}
	_ = json.NewEncoder(os.Stdout).Encode(p.Stats())
}
