package agent

import (
	"net"
	"testing"
)

// TestOwnDialsNeedTheID: a connect line is the agent's own only when both
// its address and its client id are those of a connection the agent
// opened; a client reusing the local port of an agent connection that
// just closed is a client (TestTakeoverStorm lost takeovers to that).
func TestOwnDialsNeedTheID(t *testing.T) {
	var d ownDials
	d.note(&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}, "storm-3")
	cases := []struct {
		from, id string
		want     bool
	}{
		{"127.0.0.1:40000", "storm-3", true},
		{"127.0.0.1:40000", "storm-4", false}, // the port, reused by another client
		{"127.0.0.1:40001", "storm-3", false},
		{"::ffff:127.0.0.1:40000", "storm-3", true}, // the broker's IPv6 spelling
		{"garbage", "storm-3", false},
	}
	for _, c := range cases {
		if got := d.ours(c.from, c.id); got != c.want {
			t.Errorf("ours(%q, %q) = %v, want %v", c.from, c.id, got, c.want)
		}
	}
}
