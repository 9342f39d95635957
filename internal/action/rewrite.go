package action

import (
	"strings"
)

// rewriter moves internal-registry references from the backed-up cluster's registry to this
// one's, and from each namespace to the one the restore maps it to.
type rewriter struct {
	oldHost, newHost string
	mapping          map[string]string
}

func (r rewriter) namespace(ns string) string {
	if m, ok := r.mapping[ns]; ok && m != "" {
		return m
	}
	return ns
}

// reference rewrites <oldHost>/<ns>/<rest> to <newHost>/<mapped ns>/<rest>; any other
// reference (an external image) is returned unchanged.
func (r rewriter) reference(ref string) string {
	if r.oldHost == "" {
		return ref
	}
	rest, ok := strings.CutPrefix(ref, r.oldHost+"/")
	if !ok {
		return ref
	}
	ns, tail, ok := strings.Cut(rest, "/")
	if !ok {
		return ref
	}
	return r.newHost + "/" + r.namespace(ns) + "/" + tail
}

// hostOf returns the registry host of <host>/<ns>/<name>, or "".
func hostOf(repository string) string {
	host, _, ok := strings.Cut(repository, "/")
	if !ok {
		return ""
	}
	return host
}
