package agent

import (
	"testing"

	"golang.org/x/sys/unix"
)

func TestStatPolicy(t *testing.T) {
	// Fields after the command name, from field 3 (state) to 41 (policy).
	tail := func(policy string) string {
		s := "S"
		for field := 4; field <= 40; field++ {
			s += " 7"
		}
		return s + " " + policy + " 0 0"
	}
	cases := []struct{ stat, want string }{
		{"123 (moha) " + tail("3"), "batch"},
		{"123 (moha) " + tail("0"), "normal"},
		{"123 (a) (b c)) " + tail("5"), "idle"}, // a command name may hold ") " itself
		{"123 (moha) " + tail("9"), "9"},
		{"123 (moha) S 1 2", "unknown"},
		{"garbage", "unknown"},
		{"123 (moha) " + tail("x"), "unknown"},
	}
	for _, c := range cases {
		if got := statPolicy(c.stat); got != c.want {
			t.Errorf("statPolicy(%q) = %q, want %q", c.stat, got, c.want)
		}
	}
}

// TestThreadPolicies reads this test process's own threads: no test here
// changes their policy, so they all have the calling thread's.
func TestThreadPolicies(t *testing.T) {
	attr, err := unix.SchedGetAttr(0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := threadPolicies(), policyNames[int(attr.Policy)]; got != want {
		t.Errorf("threadPolicies() = %q, want %q", got, want)
	}
}
