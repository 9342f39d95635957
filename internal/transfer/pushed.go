package transfer

import (
	"strings"
	"sync"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Pushed remembers the images the runs of one restore pushed. Velero adds imagestreams to a
// restore as it restores them, and each addition is answered by another run over the whole
// spec; with Pushed, a later run does not read, or ask the registry about, what an earlier one
// pushed seconds before. It is safe for concurrent use.
type Pushed struct {
	mu     sync.Mutex
	images map[string]struct{}
}

// NewPushed returns an empty Pushed.
func NewPushed() *Pushed { return &Pushed{images: map[string]struct{}{}} }

func pushedKey(repo string, digest v1.Hash, tags []string) string {
	return repo + "@" + digest.String() + " " + strings.Join(tags, ",")
}

func (p *Pushed) has(repo string, digest v1.Hash, tags []string) bool {
	if p == nil {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	_, ok := p.images[pushedKey(repo, digest, tags)]
	return ok
}

func (p *Pushed) add(repo string, digest v1.Hash, tags []string) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.images[pushedKey(repo, digest, tags)] = struct{}{}
}
