package faults_test

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	"github.com/openshift/oadp-imagestreams-backup/test/faults"
)

// upstream serves 1 MiB on GET and counts the requests that reach it.
func upstream(t *testing.T) (*httptest.Server, *atomic.Int64) {
	var seen atomic.Int64
	body := bytes.Repeat([]byte("x"), 1<<20)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen.Add(1)
		_, _ = io.Copy(io.Discard, r.Body)
		_, _ = w.Write(body)
	}))
	t.Cleanup(srv.Close)
	return srv, &seen
}

// outcomes sends GETs for paths a, b, c, a, b, c, ... and records what each met.
func outcomes(t *testing.T, p *faults.Proxy, n int) []string {
	t.Helper()
	var out []string
	for i := range n {
		resp, err := http.Get(fmt.Sprintf("%s/%c", p.URL, 'a'+i%3))
		if err != nil {
			out = append(out, "error")
			continue
		}
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		out = append(out, fmt.Sprintf("%d %v", resp.StatusCode, err != nil))
	}
	return out
}

func TestTheSameSeedInjectsTheSameFaults(t *testing.T) {
	srv, _ := upstream(t)
	cfg := faults.Config{ErrorRate: 0.3, ResetRate: 0.3, Seed: 7}
	first, again := faults.Start(t, srv.URL, cfg), faults.Start(t, srv.URL, cfg)
	cfg.Seed = 8
	other := faults.Start(t, srv.URL, cfg)
	a, b, c := outcomes(t, first, 30), outcomes(t, again, 30), outcomes(t, other, 30)
	if fmt.Sprint(a) != fmt.Sprint(b) {
		t.Errorf("seed 7 twice:\n%v\n%v", a, b)
	}
	if fmt.Sprint(a) == fmt.Sprint(c) {
		t.Errorf("seeds 7 and 8 injected the same faults: %v", a)
	}
	if got := first.Counts(); got.Errors == 0 || got.DownloadResets == 0 || got != again.Counts() {
		t.Errorf("counts %s and %s, want equal and with errors and resets", got, again.Counts())
	}
}

func TestResetsCutTheBodyPartway(t *testing.T) {
	srv, seen := upstream(t)
	p := faults.Start(t, srv.URL, faults.Config{ResetRate: 1})
	for _, tt := range []struct {
		name         string
		method       string
		body         io.Reader
		wantUpstream int64
	}{
		{"a download is forwarded, then cut", http.MethodGet, nil, 1},
		{"an upload is cut before it is forwarded", http.MethodPut, bytes.NewReader(make([]byte, 1<<20)), 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			before := seen.Load()
			req, err := http.NewRequest(tt.method, p.URL+"/blob", tt.body)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := http.DefaultClient.Do(req)
			var n int64
			if err == nil {
				n, err = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if n <= 0 || n >= 1<<20 {
					t.Errorf("read %d bytes of the body before the cut, want part of it", n)
				}
			}
			if err == nil {
				t.Fatal("the request succeeded through a reset")
			}
			if got := seen.Load() - before; got != tt.wantUpstream {
				t.Errorf("upstream saw %d requests, want %d", got, tt.wantUpstream)
			}
		})
	}
	if got := p.Counts(); got.DownloadResets != 1 || got.UploadResets != 1 {
		t.Errorf("counts %s, want one reset of each kind", got)
	}
}
