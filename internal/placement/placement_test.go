package placement

import (
	"fmt"
	"slices"
	"testing"
)

func TestBucketIsCRC32IEEE(t *testing.T) {
	// crc32("123456789") = 0xCBF43926, the IEEE check value.
	if got := Bucket("123456789"); got != int(0xCBF43926%Buckets) {
		t.Fatalf("Bucket = %d, want %d", got, 0xCBF43926%Buckets)
	}
}

func TestOrderIsAPermutationAndStable(t *testing.T) {
	nodes := []string{"n1", "n2", "n3", "n4"}
	for b := range Buckets {
		o := Order(b, nodes)
		if s := slices.Sorted(slices.Values(o)); !slices.Equal(s, nodes) {
			t.Fatalf("bucket %d: order %v is not a permutation of %v", b, o, nodes)
		}
		if !slices.Equal(o, Order(b, []string{"n4", "n3", "n2", "n1"})) {
			t.Fatalf("bucket %d: the order depends on how the nodes are listed", b)
		}
	}
}

// TestOnlyTheDeadNodesBucketsMove: removing a node moves exactly the
// buckets it was first in, each to the next node of its order.
func TestOnlyTheDeadNodesBucketsMove(t *testing.T) {
	nodes := []string{"n1", "n2", "n3", "n4", "n5"}
	up := func(dead string) func(string) bool { return func(n string) bool { return n != dead } }
	for _, dead := range nodes {
		moved := 0
		for b := range Buckets {
			id := clientInBucket(t, b)
			before := Serving(id, nodes, up(""), 2)
			after := Serving(id, nodes, up(dead), 1)
			switch {
			case before[0] == dead:
				moved++
				if after[0] != before[1] {
					t.Fatalf("bucket %d: %s died, moved to %s, want the next in order %s", b, dead, after[0], before[1])
				}
			case after[0] != before[0]:
				t.Fatalf("bucket %d moved from %s to %s although %s died", b, before[0], after[0], dead)
			}
		}
		if moved == 0 {
			t.Fatalf("%s served no bucket", dead)
		}
	}
}

// TestBucketsSpread: 64 buckets over 3 nodes, each node first for a fair
// share (within 50 % of even).
func TestBucketsSpread(t *testing.T) {
	nodes := []string{"node1", "node2", "node3"}
	first := map[string]int{}
	for b := range Buckets {
		first[Order(b, nodes)[0]]++
	}
	for _, n := range nodes {
		if even := Buckets / len(nodes); first[n] < even/2 || first[n] > even*3/2 {
			t.Fatalf("first for %v buckets, want about %d each", first, even)
		}
	}
}

func TestServing(t *testing.T) {
	nodes := []string{"a", "b", "c"}
	all := func(string) bool { return true }
	got := Serving("client", nodes, all, 3)
	if want := Order(Bucket("client"), nodes); !slices.Equal(got, want) {
		t.Fatalf("Serving = %v, want the bucket order %v", got, want)
	}
	if got := Serving("client", nodes, func(string) bool { return false }, 2); len(got) != 0 {
		t.Fatalf("Serving with every node down = %v", got)
	}
}

// clientInBucket finds a client id in bucket b.
func clientInBucket(t *testing.T, b int) string {
	t.Helper()
	for i := range 100000 {
		if id := fmt.Sprintf("c%d", i); Bucket(id) == b {
			return id
		}
	}
	t.Fatalf("no client id in bucket %d", b)
	return ""
}
