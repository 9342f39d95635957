// Package peers starts the real servers the tests talk to, each on a loopback address with its
// data in the test's temporary directory: the versitygw S3 server and the distribution registry.
package peers

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/openshift/oadp-imagestreams-backup/test/testenv"
)

// TB is the part of testing.TB the servers need, so that benchmarks run outside `go test`
// can start them too.
type TB interface {
	Helper()
	Fatal(args ...any)
	Fatalf(format string, args ...any)
	TempDir() string
	Cleanup(func())
}

// Binary finds a tool: the path in env var, else on PATH, else the only bin/<pattern> built by make.
func Binary(t TB, env, pattern string) string {
	t.Helper()
	if p := os.Getenv(env); p != "" {
		return p
	}
	if p, err := exec.LookPath(pattern); err == nil {
		return p
	}
	matches, _ := filepath.Glob(filepath.Join(testenv.RepoRoot(), "bin", pattern))
	if len(matches) != 1 {
		t.Fatalf("%s: found %d builds of %s under bin/; run `make test` or set %s", env, len(matches), pattern, env)
	}
	return matches[0]
}

// freePort returns a port of 127.0.0.1 that was free a moment ago.
func freePort(t TB) int {
	t.Helper()
	return freePortOn(t, "127.0.0.1")
}

// freePortOn returns a port of the loopback address ip that was free a moment ago.
func freePortOn(t TB, ip string) int {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// ProcessCPU is the CPU time, user and system, process pid has used so far: utime and stime
// of /proc/PID/stat, fields 14 and 15 counted from the pid, in clock ticks of 1/100 s on Linux.
// The command name (field 2) is parenthesised and may hold spaces, so fields are counted after
// its closing parenthesis.
func ProcessCPU(pid int) (time.Duration, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	fields := strings.Fields(string(raw[bytes.LastIndexByte(raw, ')')+1:]))
	if len(fields) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat has %d fields after the command", pid, len(fields))
	}
	var ticks int64
	for _, f := range fields[11:13] {
		n, err := strconv.ParseInt(f, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
		}
		ticks += n
	}
	return time.Duration(ticks) * 10 * time.Millisecond, nil
}

// start runs cmd until the test ends and waits until addr accepts connections.
func start(t TB, cmd *exec.Cmd, addr string) {
	t.Helper()
	log, err := os.Create(filepath.Join(t.TempDir(), filepath.Base(cmd.Path)+".log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", cmd.Path, err)
	}
	var waitErr error
	exited := make(chan struct{})
	go func() { waitErr = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		log.Close()
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		if c, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr); err == nil {
			c.Close()
			return
		}
		select {
		case <-exited:
			out, _ := os.ReadFile(log.Name())
			t.Fatalf("%s exited before listening on %s: %v\n%s", cmd.Path, addr, waitErr, out)
		case <-ctx.Done():
			out, _ := os.ReadFile(log.Name())
			t.Fatalf("%s did not listen on %s in time\n%s", cmd.Path, addr, out)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// S3 is a running versitygw S3 server.
type S3 struct {
	URL, Region, AccessKey, SecretKey string
	// Dir is the server's data directory; a bucket is a directory in it.
	Dir string
}

// StartS3 starts versitygw with a posix backend and one bucket per name in buckets.
func StartS3(t TB, buckets ...string) *S3 {
	t.Helper()
	s := &S3{Region: "us-east-1", AccessKey: "testaccess", SecretKey: "testsecret-" + fmt.Sprint(time.Now().UnixNano()), Dir: t.TempDir()}
	for _, b := range buckets {
		// versitygw's posix backend serves each top-level directory as a bucket.
		if err := os.Mkdir(filepath.Join(s.Dir, b), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	s.URL = "http://" + addr
	cmd := exec.Command(Binary(t, "VERSITYGW", "versitygw-*"), "--port", addr, "--region", s.Region, "posix", s.Dir)
	cmd.Env = append(os.Environ(), "ROOT_ACCESS_KEY="+s.AccessKey, "ROOT_SECRET_KEY="+s.SecretKey)
	start(t, cmd, addr)
	return s
}

// CredentialsFile is an AWS shared credentials file for the server's root user under profile.
func (s *S3) CredentialsFile(profile string) []byte {
	return fmt.Appendf(nil, "[%s]\naws_access_key_id = %s\naws_secret_access_key = %s\n", profile, s.AccessKey, s.SecretKey)
}
