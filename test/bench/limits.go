package main

import (
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// limits are what this machine allows a copy, in MiB/s: every byte a backup or restore moves is
// hashed once (sha256, on one core per blob) and written to the disk under the bucket or the
// registry once.
type limits struct{ disk, sha256 float64 }

func (l limits) min() float64 { return min(l.disk, l.sha256) }

// limitBytes is how much each limit is measured over: enough to pass the disk's caches.
const limitBytes = 1 << 30

// measureLimits measures the write speed of dir's disk, with fsync, and sha256 on one core.
func measureLimits(dir string) (limits, error) {
	buf := make([]byte, 4<<20)
	if _, err := rand.Read(buf); err != nil {
		return limits{}, err
	}
	f, err := os.Create(filepath.Join(dir, "limit"))
	if err != nil {
		return limits{}, err
	}
	defer os.Remove(f.Name())
	start := time.Now()
	for n := 0; n < limitBytes; n += len(buf) {
		if _, err := f.Write(buf); err != nil {
			f.Close()
			return limits{}, fmt.Errorf("measuring the disk: %w", err)
		}
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return limits{}, fmt.Errorf("measuring the disk: %w", err)
	}
	disk := time.Since(start)
	if err := f.Close(); err != nil {
		return limits{}, err
	}
	h := sha256.New()
	start = time.Now()
	for n := 0; n < limitBytes; n += len(buf) {
		h.Write(buf)
	}
	hashing := time.Since(start)
	mib := float64(limitBytes) / (1 << 20)
	return limits{disk: mib / disk.Seconds(), sha256: mib / hashing.Seconds()}, nil
}
