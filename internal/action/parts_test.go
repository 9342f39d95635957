package action

import (
	"fmt"
	"regexp"
	"testing"

	imagev1 "github.com/openshift/api/image/v1"
	"github.com/sirupsen/logrus"
	velerov1 "github.com/vmware-tanzu/velero/pkg/apis/velero/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Parts other than the head are filled in turn, itemsPerPart imagestreams each, and each is
// full exactly once; the head takes what they leave; a backup with more imagestreams than its
// parts take spreads the rest over every part.
func TestPartsAreFilledInTurnThenSpread(t *testing.T) {
	backup := &velerov1.Backup{ObjectMeta: metav1.ObjectMeta{Namespace: "velero", Name: "b", UID: "0123456789ab"}}
	tests := []struct {
		name            string
		parts, streams  int
		wantHeld        map[string]int // imagestreams by part
		wantFull        []string       // parts that filled, in order
		spreadOverHead  bool           // the head holds some of the rest
		spreadOverParts bool           // some of the rest went to parts already full
	}{
		{name: "one part holds everything in the head", parts: 1, streams: 70,
			wantHeld: map[string]int{"b": 70}},
		{name: "three parts, the head takes what parts 1 and 2 leave", parts: 3, streams: 120,
			wantHeld: map[string]int{"b-part1-01234567": 50, "b-part2-01234567": 50, "b": 20},
			wantFull: []string{"b-part1-01234567", "b-part2-01234567"}},
		{name: "more imagestreams than the parts take are spread over all of them", parts: 3, streams: 400,
			wantFull: []string{"b-part1-01234567", "b-part2-01234567"}, spreadOverHead: true, spreadOverParts: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := &backupParts{count: tt.parts, filling: 1}
			held := map[string]int{}
			var full []string
			for i := range tt.streams {
				part, isFull := b.place(backup, "app", fmt.Sprintf("is-%03d", i))
				held[part]++
				if isFull {
					full = append(full, part)
				}
			}
			if fmt.Sprint(full) != fmt.Sprint(tt.wantFull) {
				t.Errorf("parts that filled %v, want %v", full, tt.wantFull)
			}
			if tt.wantHeld != nil && fmt.Sprint(held) != fmt.Sprint(tt.wantHeld) {
				t.Errorf("imagestreams by part %v, want %v", held, tt.wantHeld)
			}
			if tt.spreadOverHead && held["b"] == 0 {
				t.Errorf("the head holds none of the imagestreams the parts could not take: %v", held)
			}
			if tt.spreadOverParts && (held["b-part1-01234567"] <= 50 || held["b-part2-01234567"] <= 50) {
				t.Errorf("the full parts took none of the rest: %v", held)
			}
			total := 0
			for _, n := range held {
				total += n
			}
			if total != tt.streams {
				t.Errorf("placed %d imagestreams, want %d", total, tt.streams)
			}
		})
	}
}

// With several item-block workers, Execute calls overlap: an imagestream goes without an
// operation only once the Execute that took its part's shared operation has returned it, so
// that Velero holds some operation for every imagestream it stores; each part and the head go
// as post-operation items with the first operation only.
func TestAnImageStreamGoesWithoutAnOperationOnlyOnceItsPartsOperationWasReturned(t *testing.T) {
	backup := &velerov1.Backup{ObjectMeta: metav1.ObjectMeta{Namespace: "velero", Name: "b", UID: "0123456789ab"}}
	a := NewBackupAction(logrus.New(), nil, nil)
	a.backups[backup.UID] = &backupParts{count: 1, listed: map[string]bool{}, opened: map[string]bool{}, returned: map[string]bool{}}
	claim := func(name string, firstWrite bool) (string, int, bool) {
		op, post, shared := a.claim(backup, "b", &imagev1.ImageStream{ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: name}}, firstWrite)
		return op, len(post), shared
	}
	for _, step := range []struct {
		what, name string
		firstWrite bool
		returned   bool // the shared operation's Execute has returned before this one
		wantOp     string
		wantPost   int
		wantShared bool
	}{
		{"the first imagestream of the write takes the part's operation", "x1", true, false, `^b/\*/[0-9a-f]{16}/[0-9]+$`, 1, true},
		{"another while that Execute has not returned has its own", "x2", true, false, `^b/app/x2/[0-9]+$`, 0, false},
		{"another once it has returned has none", "x3", true, true, `^$`, 0, false},
		{"one after the write started has its own", "x4", false, true, `^b/app/x4/[0-9]+$`, 0, false},
	} {
		if step.returned {
			a.returnedShared(backup.UID, "b")
		}
		op, post, shared := claim(step.name, step.firstWrite)
		if !regexp.MustCompile(step.wantOp).MatchString(op) || post != step.wantPost || shared != step.wantShared {
			t.Errorf("%s: operation %q, %d post-operation items, shared %v; want %s, %d, %v", step.what, op, post, shared, step.wantOp, step.wantPost, step.wantShared)
		}
	}
}
