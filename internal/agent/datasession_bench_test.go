package agent

import (
	"fmt"
	"testing"

	"github.com/moha-project/moha/internal/datasub"
	"github.com/moha-project/moha/internal/forward"
	"github.com/moha-project/moha/internal/retained"
)

// BenchmarkWantedFilters100k: deciding what the data session must hold, at
// 100k peer filters (run once per step of the data session). They form one
// dense set: the data session holds bench/+/x.
func BenchmarkWantedFilters100k(b *testing.B) {
	benchWanted(b, 100_000, "bench/%d/x")
}

// BenchmarkWantedFilters100kSparse: 100k peer filters none of which
// aggregates (every key of every filter is its own): the cost of looking
// for dense sets, and of a step over 100k filters.
func BenchmarkWantedFilters100kSparse(b *testing.B) {
	benchWanted(b, 100_000, "bench/%[1]d/x%[1]d")
}

// BenchmarkWantedFilters1M: a million clients on a peer each subscribed
// to devices/<id>/cmd (issue 17 §1).
func BenchmarkWantedFilters1M(b *testing.B) {
	benchWanted(b, 1_000_000, "devices/%d/cmd")
}

// benchWanted runs wanted and the step it gives, with n peer filters made
// from format and the filter's number, the data session holding them.
func benchWanted(b *testing.B, n int, format string) {
	r := forward.NewRouter([]string{"p"}, true)
	fs := make([]string, n)
	for i := range fs {
		fs[i] = fmt.Sprintf(format, i)
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
	b.ReportMetric(float64(set.Len()), "held")
}
