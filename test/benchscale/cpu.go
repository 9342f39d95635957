package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/openshift/oadp-imagestreams-backup/test/peers"
)

// processes are the stack's servers whose CPU time a phase reports, by the start of their
// command name (/proc/PID/comm holds at most 15 bytes of it).
var processes = []struct{ name, comm string }{
	{"worker", "imagestreams-ba"},
	{"registry", "docker-registry"},
	{"S3 server", "versitygw"},
	{"kube-apiserver", "kube-apiserver"},
	{"etcd", "etcd"},
	{"velero", "velero"},
}

// cpuTimes is the CPU time, user and system, of each of processes.
type cpuTimes map[string]time.Duration

// readCPUTimes reads what every process of this machine has used so far from /proc. The
// stack runs in a network namespace but not a PID namespace of its own, so a server of the same
// name outside the stack counts too; the benchmark machine runs none.
func readCPUTimes() cpuTimes {
	out := cpuTimes{}
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, dir := range dirs {
		comm, err := os.ReadFile(dir + "/comm")
		if err != nil {
			continue
		}
		i := slices.IndexFunc(processes, func(p struct{ name, comm string }) bool {
			return strings.HasPrefix(strings.TrimSpace(string(comm)), p.comm)
		})
		if i < 0 {
			continue
		}
		pid, err := strconv.Atoi(filepath.Base(dir))
		if err != nil {
			continue
		}
		if d, err := peers.ProcessCPU(pid); err == nil {
			out[processes[i].name] += d
		}
	}
	return out
}

func (c cpuTimes) minus(before cpuTimes) cpuTimes {
	out := cpuTimes{}
	for k, v := range c {
		out[k] = v - before[k]
	}
	return out
}

func (c cpuTimes) String() string {
	var parts []string
	for _, p := range processes {
		if d, ok := c[p.name]; ok {
			parts = append(parts, fmt.Sprintf("%s %.1fs", p.name, d.Seconds()))
		}
	}
	return strings.Join(parts, ", ")
}

// profileWorker writes a CPU profile of the worker's next seconds into dir/name.pprof, in the
// background; the returned function waits for it.
func profileWorker(addr, dir, name string, seconds int) (wait func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		err := func() error {
			resp, err := http.Get(fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", addr, seconds))
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("profile: %s", resp.Status)
			}
			f, err := os.Create(filepath.Join(dir, name+".pprof"))
			if err != nil {
				return err
			}
			if _, err := io.Copy(f, resp.Body); err != nil {
				f.Close()
				return err
			}
			return f.Close()
		}()
		if err != nil {
			step("profiling the worker: %v", err)
		}
	}()
	return func() { <-done }
}
