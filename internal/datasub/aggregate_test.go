package datasub

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
)

// TestAggregate is the decision table of Aggregate, with 3 as the
// threshold: what the data session subscribes for a wanted set.
func TestAggregate(t *testing.T) {
	cases := []struct {
		name string
		want []string
		got  []string
		agg  Aggregation
	}{
		{
			name: "below the threshold nothing changes",
			want: []string{"d/1/cmd", "d/2/cmd"},
			got:  []string{"d/1/cmd", "d/2/cmd"},
		},
		{
			name: "at the threshold the wildcard replaces them",
			want: []string{"d/1/cmd", "d/2/cmd", "d/3/cmd"},
			got:  []string{"d/+/cmd"},
			agg:  Aggregation{Wildcards: 1, Filters: 3},
		},
		{
			name: "above the threshold",
			want: []string{"d/1/cmd", "d/2/cmd", "d/3/cmd", "d/4/cmd", "d//cmd"},
			got:  []string{"d/+/cmd"},
			agg:  Aggregation{Wildcards: 1, Filters: 5},
		},
		{
			name: "any level, the first and the last too",
			want: []string{"a/x", "b/x", "c/x", "k/1", "k/2", "k/3"},
			got:  []string{"+/x", "k/+"},
			agg:  Aggregation{Wildcards: 2, Filters: 6},
		},
		{
			name: "mixed shapes: only the dense set goes",
			want: []string{"d/1/cmd", "d/2/cmd", "d/3/cmd", "d/1/cmd/x", "d/2/state", "e/1/cmd", "top", "f/1", "f/2"},
			got:  []string{"d/+/cmd", "d/1/cmd/x", "d/2/state", "e/1/cmd", "f/1", "f/2", "top"},
			agg:  Aggregation{Wildcards: 1, Filters: 3},
		},
		{
			name: "levels counted apart: a deeper filter is not in the key",
			want: []string{"d/1/cmd", "d/2/cmd", "d/3/cmd/x"},
			got:  []string{"d/1/cmd", "d/2/cmd", "d/3/cmd/x"},
		},
		{
			name: "a filter in two dense keys goes to the densest",
			want: []string{"d/1/cmd", "d/2/cmd", "d/3/cmd", "d/4/cmd", "d/1/a", "d/1/b"},
			got:  []string{"d/+/cmd", "d/1/a", "d/1/b"}, // d/1/+ keeps 2 < 3: stays exact
			agg:  Aggregation{Wildcards: 1, Filters: 4},
		},
		{
			name: "a tie goes to the earlier level",
			want: []string{"d/1/cmd", "d/2/cmd", "d/3/cmd", "d/1/a", "d/1/b"},
			got:  []string{"d/+/cmd", "d/1/a", "d/1/b"},
			agg:  Aggregation{Wildcards: 1, Filters: 3},
		},
		{
			name: "a key left with too few members keeps them exact",
			want: []string{"d/1/cmd", "d/2/cmd", "d/3/cmd", "d/1/a", "d/1/b", "d/1/c"},
			got:  []string{"d/1/+", "d/2/cmd", "d/3/cmd"}, // d/+/cmd lost d/1/cmd: 2 left
			agg:  Aggregation{Wildcards: 1, Filters: 4},
		},
		{
			name: "a grid goes to one key per row, each filter once",
			want: grid(3, 3),
			got:  []string{"g/+/0", "g/+/1", "g/+/2"},
			agg:  Aggregation{Wildcards: 3, Filters: 9},
		},
		{
			name: "wildcards untouched",
			want: []string{"d/1/+", "d/2/+", "d/3/+", "d/#", "+/x/y", "#"},
			got:  []string{"#", "+/x/y", "d/#", "d/1/+", "d/2/+", "d/3/+"},
		},
		{
			name: "$ topics and shared subscriptions untouched",
			want: []string{"$SYS/1/a", "$SYS/2/a", "$SYS/3/a", "$share/g/1", "$share/g/2", "$share/g/3"},
			got:  []string{"$SYS/1/a", "$SYS/2/a", "$SYS/3/a", "$share/g/1", "$share/g/2", "$share/g/3"},
		},
		{
			name: "single-level filters untouched",
			want: []string{"a", "b", "c", "d"},
			got:  []string{"a", "b", "c", "d"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			want := map[string]bool{}
			for _, f := range tc.want {
				want[f] = false
			}
			agg := Aggregate(want, 3)
			if got := slices.Sorted(maps.Keys(want)); !slices.Equal(got, slices.Sorted(slices.Values(tc.got))) {
				t.Errorf("got %v, want %v", got, tc.got)
			}
			if agg != tc.agg {
				t.Errorf("aggregation %+v, want %+v", agg, tc.agg)
			}
		})
	}
}

// TestAggregateKeepsValues: a filter left exact keeps its replay flag; a
// wildcard added asks for none.
func TestAggregateKeepsValues(t *testing.T) {
	want := map[string]bool{"d/1/cmd": false, "d/2/cmd": false, "d/3/cmd": false, "r/1": true}
	Aggregate(want, 3)
	if !maps.Equal(want, map[string]bool{"d/+/cmd": false, "r/1": true}) {
		t.Fatalf("got %v", want)
	}
}

// TestAggregateDeterministic: the same set gives the same result, whatever
// the order the map is walked in (it differs from call to call).
func TestAggregateDeterministic(t *testing.T) {
	var first []string
	for range 50 {
		want := map[string]bool{}
		for _, f := range append(grid(20, 20), grid2(20, 30)...) {
			want[f] = false
		}
		Aggregate(want, 20)
		got := slices.Sorted(maps.Keys(want))
		if first == nil {
			first = got
			continue
		}
		if !slices.Equal(got, first) {
			t.Fatalf("got %v, then %v", first, got)
		}
	}
}

// TestAggregateAtDefault: 255 exact filters stay; 256 become one wildcard.
func TestAggregateAtDefault(t *testing.T) {
	for _, n := range []int{AggregateMin - 1, AggregateMin} {
		want := map[string]bool{}
		for i := range n {
			want[fmt.Sprintf("devices/%d/cmd", i)] = false
		}
		agg := Aggregate(want, AggregateMin)
		wantAgg := Aggregation{}
		if n >= AggregateMin {
			wantAgg = Aggregation{Wildcards: 1, Filters: n}
		}
		if agg != wantAgg {
			t.Fatalf("%d filters: aggregation %+v, want %+v", n, agg, wantAgg)
		}
		if _, ok := want["devices/+/cmd"]; ok != (n >= AggregateMin) {
			t.Fatalf("%d filters: holds devices/+/cmd %v", n, ok)
		}
	}
}

// grid returns g/<i>/<j>: every filter is in a dense key of each level.
func grid(rows, cols int) []string {
	var out []string
	for i := range rows {
		for j := range cols {
			out = append(out, fmt.Sprintf("g/%d/%d", i, j))
		}
	}
	return out
}

// grid2 returns h/<i>/x/<j>, rows and columns of different sizes.
func grid2(rows, cols int) []string {
	var out []string
	for i := range rows {
		for j := range cols {
			out = append(out, strings.Join([]string{"h", fmt.Sprint(i), "x", fmt.Sprint(j)}, "/"))
		}
	}
	return out
}

func TestLevelBounds(t *testing.T) {
	for _, tc := range []struct {
		filter     string
		pos        int
		start, end int
	}{
		{"a/bb/c", 0, 0, 1},
		{"a/bb/c", 1, 2, 4},
		{"a/bb/c", 2, 5, 6},
		{"a//c", 1, 2, 2},
		{"/x", 0, 0, 0},
		{"/x", 1, 1, 2},
	} {
		if s, e := levelBounds(tc.filter, tc.pos); s != tc.start || e != tc.end {
			t.Errorf("levelBounds(%q, %d) = %d, %d, want %d, %d", tc.filter, tc.pos, s, e, tc.start, tc.end)
		}
		w := tc.filter[:tc.start] + "+" + tc.filter[tc.end:]
		if !isKey(w, tc.filter, tc.start, tc.end) || isKey(w+"x", tc.filter, tc.start, tc.end) {
			t.Errorf("isKey(%q, %q, %d, %d) wrong", w, tc.filter, tc.start, tc.end)
		}
	}
}

// BenchmarkAggregate100k: 100k filters of three levels, in one dense set
// (dense) or with every key their own (sparse).
func BenchmarkAggregate100k(b *testing.B) {
	for _, bc := range []struct{ name, format string }{
		{"dense", "devices/%d/cmd"},
		{"sparse", "devices/%[1]d/cmd%[1]d"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			fs := make([]string, 100_000)
			for i := range fs {
				fs[i] = fmt.Sprintf(bc.format, i)
			}
			for b.Loop() {
				want := make(map[string]bool, len(fs))
				for _, f := range fs {
					want[f] = false
				}
				Aggregate(want, AggregateMin)
			}
		})
	}
}
