package main

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync/atomic"

	"github.com/openshift/oadp-imagestreams-backup/test/peers"
)

// s3Server is versitygw, the S3 server the tests run, behind a proxy on 127.0.0.1 that counts
// the requests it passes on.
type s3Server struct {
	*peers.S3
	// url is the proxy's; credentials is an AWS shared credentials file for the server.
	url, credentials string
	requests         atomic.Int64
}

const s3Bucket = "bench"

func startS3(e *env) (*s3Server, error) {
	s := &s3Server{S3: peers.StartS3(e, s3Bucket)}
	target, err := url.Parse(s.URL)
	if err != nil {
		return nil, err
	}
	proxy := httputil.NewSingleHostReverseProxy(target)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.requests.Add(1)
		proxy.ServeHTTP(w, r)
	})}
	go func() { _ = srv.Serve(ln) }()
	e.Cleanup(func() { _ = srv.Close() })
	s.url = "http://" + ln.Addr().String()
	s.credentials = filepath.Join(e.TempDir(), "credentials")
	return s, os.WriteFile(s.credentials, s.CredentialsFile("default"), 0o600)
}

// args are the child's flags for the store under prefix.
func (s *s3Server) args(prefix string) []string {
	return append(bucketFlag(s3Bucket), "-s3", s.url, "-s3-credentials", s.credentials, "-prefix", prefix)
}

// dir is where the server keeps the objects under prefix.
func (s *s3Server) dir(prefix string) string { return filepath.Join(s.Dir, s3Bucket, prefix) }

// s3Run is what benchS3 measures.
type s3Run struct {
	s3           *s3Server
	src          *peers.Registry // the registry the backups read
	scenarios    []*scenario
	self         string
	jobs, rounds int
	refs         func(*scenario) []string
	env          *env
}

// benchS3 measures our backup of every scenario, the re-backup of (c) and the restore of (a),
// with the S3 server as the store, counting its requests.
func benchS3(rec *recorder, run s3Run) error {
	measure := func(s *scenario, label, prefix string, cmd *exec.Cmd) error {
		run.s3.requests.Store(0)
		r, err := rec.measure(s, label, "ours to S3", run.s3.dir(prefix), run.src, cmd)
		if err == nil {
			r.requests = run.s3.requests.Load()
		}
		return err
	}
	for round := range run.rounds {
		for _, s := range run.scenarios {
			prefix := fmt.Sprintf("r%d-s%d", round, s.index)
			backup := func() *exec.Cmd {
				args := append(append([]string{cmdCopy}, jobsFlag(run.jobs)...), run.s3.args(prefix)...)
				args = append(args, run.refs(s)...)
				return exec.Command(run.self, args...)
			}
			if err := measure(s, s.name, prefix, backup()); err != nil {
				return err
			}
			if s.rebackup != "" {
				if err := measure(s, s.rebackup, prefix, backup()); err != nil {
					return err
				}
			}
		}
		if err := restoreFromS3(rec, run, round); err != nil {
			return err
		}
		for _, s := range run.scenarios {
			if err := os.RemoveAll(run.s3.dir(fmt.Sprintf("r%d-s%d", round, s.index))); err != nil {
				return err
			}
		}
	}
	return nil
}

// restoreFromS3 restores the large layers of scenario (a), if measured, from the S3 server.
func restoreFromS3(rec *recorder, run s3Run, round int) error {
	i := slices.IndexFunc(run.scenarios, func(s *scenario) bool { return s.index == 0 })
	if i < 0 {
		return nil
	}
	s := run.scenarios[i]
	r := peers.StartRegistry(run.env, peers.NoAuth)
	prefix := fmt.Sprintf("r%d-s%d", round, s.index)
	restore := exec.Command(run.self, append(append([]string{cmdRestore, "-registry", r.Host}, jobsFlag(run.jobs)...), run.s3.args(prefix)...)...)
	run.s3.requests.Store(0)
	row, err := rec.measure(s, s.restore, "ours from S3", r.Dir, r, restore)
	if err != nil {
		return err
	}
	row.requests = run.s3.requests.Load()
	return os.RemoveAll(r.Dir)
}
