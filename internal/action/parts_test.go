package action

import (
	"fmt"
	"testing"

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
			b := &backupParts{count: tt.parts, named: map[string]bool{}, filling: 1}
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
