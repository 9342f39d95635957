package stack

import (
	"io"
	"net"
	"sync"
	"sync/atomic"
)

// meter is a TCP proxy that counts the bytes clients send through it: put in front of the S3
// server, it measures what the worker and velero upload, retries and abandoned uploads included.
type meter struct {
	listener net.Listener
	target   string
	sent     atomic.Int64
	wg       sync.WaitGroup
}

func startMeter(target string) (*meter, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	m := &meter{listener: l, target: target}
	m.wg.Add(1)
	go m.serve()
	return m, nil
}

func (m *meter) addr() string { return m.listener.Addr().String() }

func (m *meter) serve() {
	defer m.wg.Done()
	for {
		in, err := m.listener.Accept()
		if err != nil {
			return
		}
		go m.relay(in)
	}
}

func (m *meter) relay(in net.Conn) {
	defer in.Close()
	out, err := net.Dial("tcp", m.target)
	if err != nil {
		return
	}
	defer out.Close()
	done := make(chan struct{})
	go func() {
		_, _ = io.Copy(in, out)
		in.Close()
		close(done)
	}()
	_, _ = io.Copy(counter{out, &m.sent}, in)
	_ = out.(*net.TCPConn).CloseWrite()
	<-done
}

func (m *meter) close() {
	m.listener.Close()
	m.wg.Wait()
}

type counter struct {
	w io.Writer
	n *atomic.Int64
}

func (c counter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n.Add(int64(n))
	return n, err
}
