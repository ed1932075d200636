package agent

import (
	"testing"
	"time"

	"github.com/moha-project/moha/internal/message"
)

func retainedMsg(topic, payload string) *message.Message {
	return &message.Message{Topic: topic, Payload: []byte(payload), Retain: true}
}

// TestStampFound is the decision table of a rescan finding a retained
// message: a write the agent did not see gets a fresh stamp (and goes to
// the peers); anything else is not a write.
func TestStampFound(t *testing.T) {
	now := time.Unix(2000, 0)
	cases := []struct {
		name    string
		prepare func(c *retainedClock)
		found   string
		want    bool
	}{
		{"unknown topic: a write not seen", func(*retainedClock) {}, "v", true},
		{"the value known", func(c *retainedClock) { c.learnScanned(retainedMsg("t", "v")) }, "v", false},
		{"another value, no suspect replay: not proven newer", func(c *retainedClock) { c.learnScanned(retainedMsg("t", "v")) }, "w", false},
		{"another value after a suspect replay: a write not seen", func(c *retainedClock) {
			c.learnScanned(retainedMsg("t", "v"))
			c.suspectReplay(retainedMsg("t", "w"))
		}, "w", true},
		{"a value where a deletion is known: a write not seen", func(c *retainedClock) {
			m := retainedMsg("t", "")
			m.Written = 1500
			c.applyRemote(m, now)
			c.settled("t", 1500)
		}, "v", true},
		{"a peer's deletion still being republished: the value it deletes", func(c *retainedClock) {
			c.learnScanned(retainedMsg("t", "old"))
			m := retainedMsg("t", "")
			m.Written = 1500
			c.applyRemote(m, now)
			c.suspectReplay(retainedMsg("t", "old"))
		}, "old", false},
		{"a peer's write still being republished: the value it replaces", func(c *retainedClock) {
			c.learnScanned(retainedMsg("t", "old"))
			m := retainedMsg("t", "new")
			m.Written = 1500
			c.applyRemote(m, now)
			c.suspectReplay(retainedMsg("t", "old"))
		}, "old", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := newRetainedClock()
			tc.prepare(c)
			stamp, ok := c.stampFound(retainedMsg("t", tc.found), now)
			if ok != tc.want {
				t.Fatalf("stampFound = %d, %v; want %v", stamp, ok, tc.want)
			}
			if ok && stamp < now.UnixNano() {
				t.Fatalf("stamp %d older than the rescan", stamp)
			}
		})
	}
}

// TestApplyRemote is the decision table of a peer's retained write.
func TestApplyRemote(t *testing.T) {
	now := time.Unix(2000, 0)
	write := func(payload string, at int64) *message.Message {
		m := retainedMsg("t", payload)
		m.Written = at
		return m
	}
	c := newRetainedClock()
	if apply, dup := c.applyRemote(write("a", 100), now); !apply || dup {
		t.Fatalf("first write: apply %v dup %v", apply, dup)
	}
	if apply, dup := c.applyRemote(write("a", 100), now); apply || !dup {
		t.Fatalf("the same write again: apply %v dup %v, want a duplicate", apply, dup)
	}
	if apply, _ := c.applyRemote(write("old", 50), now); apply {
		t.Fatal("an older write was applied")
	}
	if apply, _ := c.applyRemote(write("", 200), now); !apply {
		t.Fatal("a newer deletion was not applied")
	}
	if apply, _ := c.applyRemote(&message.Message{Topic: "t", Payload: []byte("x"), Retain: true}, now); !apply {
		t.Fatal("an unstamped write was not applied")
	}
}
