package agent

import (
	"fmt"
	"testing"

	"github.com/moha-project/moha/internal/datasub"
	"github.com/moha-project/moha/internal/forward"
	"github.com/moha-project/moha/internal/retained"
)

// BenchmarkWantedFilters100k: deciding what the data session must hold, at
// 100k peer filters (run once per step of the data session).
func BenchmarkWantedFilters100k(b *testing.B) {
	r := forward.NewRouter([]string{"p"}, true)
	fs := make([]string, 100000)
	for i := range fs {
		fs[i] = fmt.Sprintf("bench/%d/x", i)
	}
	r.Apply("p", true, fs, nil)
	f := &dataFilters{router: r, retained: retained.NewStore()}
	set := datasub.NewSet()
	step, _ := set.Next(f.wanted())
	set.Done(step.Seq)
	b.ResetTimer()
	for b.Loop() {
		set.Next(f.wanted())
	}
}
