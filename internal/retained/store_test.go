package retained

import (
	"reflect"
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
		prepare func(c *Store)
		found   string
		want    bool
	}{
		{"unknown topic: a write not seen", func(*Store) {}, "v", true},
		{"the value known", func(c *Store) { c.LearnScanned(retainedMsg("t", "v")) }, "v", false},
		{"another value, no suspect replay: not proven newer", func(c *Store) { c.LearnScanned(retainedMsg("t", "v")) }, "w", false},
		{"another value after a suspect replay: a write not seen", func(c *Store) {
			c.LearnScanned(retainedMsg("t", "v"))
			c.SuspectReplay(retainedMsg("t", "w"))
		}, "w", true},
		{"a value where a deletion is known: a write not seen", func(c *Store) {
			m := retainedMsg("t", "")
			m.Written = 1500
			c.ApplyRemote(m, now)
			c.Settled("t", 1500)
		}, "v", true},
		{"a peer's deletion still being republished: the value it deletes", func(c *Store) {
			c.LearnScanned(retainedMsg("t", "old"))
			m := retainedMsg("t", "")
			m.Written = 1500
			c.ApplyRemote(m, now)
			c.SuspectReplay(retainedMsg("t", "old"))
		}, "old", false},
		{"a peer's write still being republished: the value it replaces", func(c *Store) {
			c.LearnScanned(retainedMsg("t", "old"))
			m := retainedMsg("t", "new")
			m.Written = 1500
			c.ApplyRemote(m, now)
			c.SuspectReplay(retainedMsg("t", "old"))
		}, "old", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := NewStore()
			tc.prepare(c)
			stamp, ok := c.StampFound(retainedMsg("t", tc.found), now)
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
	c := NewStore()
	if apply, dup := c.ApplyRemote(write("a", 100), now); !apply || dup {
		t.Fatalf("first write: apply %v dup %v", apply, dup)
	}
	if apply, dup := c.ApplyRemote(write("a", 100), now); apply || !dup {
		t.Fatalf("the same write again: apply %v dup %v, want a duplicate", apply, dup)
	}
	if apply, _ := c.ApplyRemote(write("old", 50), now); apply {
		t.Fatal("an older write was applied")
	}
	if apply, _ := c.ApplyRemote(write("", 200), now); !apply {
		t.Fatal("a newer deletion was not applied")
	}
	if apply, _ := c.ApplyRemote(&message.Message{Topic: "t", Payload: []byte("x"), Retain: true}, now); !apply {
		t.Fatal("an unstamped write was not applied")
	}
}

// TestMissingAt is the decision table of answering a peer's digest: send
// what it lacks or holds an older version of, nothing else.
func TestMissingAt(t *testing.T) {
	now := time.Unix(2000, 0)
	c := NewStore()
	write := func(topic, payload string, at int64) {
		m := retainedMsg(topic, payload)
		m.Written = at
		c.ApplyRemote(m, now)
		c.Settled(topic, at)
	}
	write("lacks", "v", 10)
	write("older", "new", 20)
	write("same", "s", 30)
	write("newer", "mine", 40)
	write("deleted", "", 50)
	write("deleted-known", "", 60)
	hash := func(topic string) uint64 {
		for _, e := range c.Digest() {
			if e.Topic == topic {
				return e.Hash
			}
		}
		return 0
	}
	peer := []DigestEntry{
		{Topic: "older", Stamp: 5, Hash: 1},
		{Topic: "same", Stamp: 30, Hash: hash("same")},
		{Topic: "newer", Stamp: 99, Hash: 2},
		{Topic: "deleted-known", Stamp: 1, Hash: 3},
	}
	got := map[string]string{}
	for _, topic := range c.MissingAt(peer) {
		m, ok := c.Current(topic)
		if !ok {
			t.Fatalf("%s is missing at the peer but not held here", topic)
		}
		got[m.Topic] = string(m.Payload)
		if !m.Retain || m.Written == 0 {
			t.Errorf("%s sent without its retain flag or stamp: %+v", m.Topic, m)
		}
	}
	want := map[string]string{"lacks": "v", "older": "new", "deleted-known": ""}
	if len(got) != len(want) {
		t.Fatalf("sent %v, want %v", got, want)
	}
	for k, v := range want {
		if g, ok := got[k]; !ok || g != v {
			t.Fatalf("sent %v, want %v", got, want)
		}
	}
}

// TestCurrentKeepsTheMessage: what a peer is sent is the message as
// written (QoS, properties, payload), with its stamp.
func TestCurrentKeepsTheMessage(t *testing.T) {
	c := NewStore()
	withProps := retainedMsg("a", "x")
	withProps.QoS, withProps.Written = 1, 7
	withProps.Props.ContentType = "text/plain"
	withProps.Props.User = []message.UserProperty{{Key: "k", Value: "v"}}
	plain := retainedMsg("b", "y")
	plain.Written = 8
	for _, m := range []*message.Message{withProps, plain} {
		c.ApplyRemote(m, time.Unix(2000, 0))
	}
	for _, want := range []*message.Message{withProps, plain} {
		got, ok := c.Current(want.Topic)
		if !ok {
			t.Fatalf("%s not held", want.Topic)
		}
		if got.Topic != want.Topic || string(got.Payload) != string(want.Payload) || got.QoS != want.QoS ||
			!got.Retain || got.Written != want.Written || !reflect.DeepEqual(got.Props, want.Props) {
			t.Errorf("Current(%s) = %+v, want %+v", want.Topic, got, want)
		}
	}
	if _, ok := c.Current("never"); ok {
		t.Error("Current of a topic never written reports one")
	}
}
