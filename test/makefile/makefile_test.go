// Package makefile tests the Makefile itself: every target the README names works as the first
// command on a machine whose bin/ is empty.
package makefile

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"testing"

	"github.com/openshift/oadp-imagestreams-backup/test/testenv"
)

// stackTools are built for every target that runs the whole stack.
var stackTools = []string{"kube-apiserver", "kube-controller-manager", "etcd", "versitygw-", "velero-v", "velero-plugin-for-aws-"}

// needs says what each README target must build first on an empty bin/, beyond resolving.
var needs = map[string][]string{
	"demo":        stackTools,
	"e2e":         stackTools,
	"bench-scale": stackTools,
	"test":        append([]string{"golangci-lint-", "controller-gen-"}, stackTools...),
	"bench":       {"crane-", "oras-", "regctl-", "versitygw-"},
	"manifests":   {"controller-gen-"},
}

// Every `make <target>` the README names resolves on an empty bin/ (each prerequisite is a file
// or a rule), and those that run tools build them first. make expands a rule's prerequisites as
// it reads the rule, so a variable defined further down would leave them out silently.
func TestEveryReadmeTargetBuildsWhatItNeeds(t *testing.T) {
	root := testenv.RepoRoot()
	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	var targets []string
	for _, m := range regexp.MustCompile("make ([a-z][a-z0-9-]*)").FindAllStringSubmatch(string(readme), -1) {
		if !slices.Contains(targets, m[1]) {
			targets = append(targets, m[1])
		}
	}
	for _, want := range []string{"demo", "test"} {
		if !slices.Contains(targets, want) {
			t.Errorf("the README names no `make %s`", want)
		}
	}
	bin := t.TempDir()
	for _, target := range targets {
		t.Run(target, func(t *testing.T) {
			cmd := exec.Command("make", "--dry-run", "--no-print-directory", "BIN="+bin, target)
			cmd.Dir = root
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("make --dry-run %s: %v\n%s", target, err, out)
			}
			for _, tool := range needs[target] {
				if !builds(string(out), bin, tool) {
					t.Errorf("make %s on an empty bin/ does not build %s first:\n%s", target, tool, out)
				}
			}
		})
	}
}

// builds reports whether a dry run's commands write a tool whose name starts with prefix
// into bin or its k8s/ directory.
func builds(out, bin, prefix string) bool {
	re := regexp.MustCompile(regexp.QuoteMeta(bin) + `/(k8s/[^/ ]+/)?` + regexp.QuoteMeta(prefix) + `[^ /]*(\.tmp)? `)
	return re.MatchString(out + " ")
}
