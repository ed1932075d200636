package agent

import (
	"strings"
	"testing"
)

// TestClientIDsAreSecret: the agent's client ids are stable for a secret
// and a node, differ between nodes and between secrets, and hold a 64-bit
// tag that only the secret gives.
func TestClientIDsAreSecret(t *testing.T) {
	a := newClientIDs([]byte("0123456789abcdef-one"), "node1")
	if again := newClientIDs([]byte("0123456789abcdef-one"), "node1"); again != a {
		t.Fatal("not stable across restarts")
	}
	other := newClientIDs([]byte("0123456789abcdef-two"), "node1")
	node2 := newClientIDs([]byte("0123456789abcdef-one"), "node2")
	if other.data[0] == a.data[0] || node2.data[0] == a.data[0] {
		t.Fatal("the ids do not depend on the secret and the node")
	}
	tag := strings.TrimPrefix(a.data[0], "moha-node1-")
	if len(tag) != 16 || strings.Trim(tag, "0123456789abcdef") != "" {
		t.Fatalf("tag %q: want 16 hex digits", tag)
	}
	for _, id := range []string{a.data[1], a.log, a.scan} {
		if !strings.HasPrefix(id, a.data[0]+"-") {
			t.Fatalf("%q does not extend %q", id, a.data[0])
		}
	}
}
