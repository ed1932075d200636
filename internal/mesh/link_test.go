package mesh

import (
	"context"
	"testing"
	"time"
)

// TestReplacedLinkResends: a second authenticated connection from a peer
// replaces the first (which is closed); what was unacknowledged on the old
// one is resent first on the new one, numbered from 1 again.
func TestReplacedLinkResends(t *testing.T) {
	rec := newRecorder()
	b := startMesh(t, testConfig(t, "b", map[string]string{"a": closedAddr(t)}), rec.handlers())
	f1, err := dialFake(t, b.addr(), "a", "b", testSecret)
	if err != nil {
		t.Fatal(err)
	}
	if fr := f1.next(); fr.typ != frameSnapshot {
		t.Fatalf("first frame %+v", fr)
	}
	waitFor(t, 5*time.Second, "link up", func() bool { return b.up("a") })

	out := newOutcomes(t)
	for i := range 3 {
		b.Send(context.Background(), "a", indexed(i), out.done(i))
	}
	got := 0
	for got < 3 {
		fr := f1.next()
		if fr.typ != framePublishBatch || fr.firstSeq != uint64(got+1) {
			t.Fatalf("frame on the first link: %+v", fr)
		}
		got += len(fr.msgs)
	}
	f1.send(frame{typ: frameAck, upTo: 1}) // message 0 accepted, 1 and 2 not
	waitFor(t, 5*time.Second, "first message acked", func() bool { return out.count(Acked) == 1 })

	f2, err := dialFake(t, b.addr(), "a", "b", testSecret)
	if err != nil {
		t.Fatal(err)
	}
	expectClosed(t, f1.conn)
	if fr := f2.next(); fr.typ != frameSnapshot {
		t.Fatalf("first frame on the new link %+v", fr)
	}
	var resent []int
	for len(resent) < 2 {
		fr := f2.next()
		if fr.typ != framePublishBatch || fr.firstSeq != uint64(len(resent)+1) {
			t.Fatalf("frame on the new link: %+v", fr)
		}
		for _, m := range fr.msgs {
			resent = append(resent, indexOf(m))
		}
	}
	if resent[0] != 1 || resent[1] != 2 {
		t.Fatalf("resent %v, want [1 2]", resent)
	}
	waitFor(t, 5*time.Second, "unacked reported Buffered", func() bool { return out.count(Buffered) == 2 })
	f2.send(frame{typ: frameAck, upTo: 2})
	waitFor(t, 5*time.Second, "buffer empty", func() bool {
		st := b.peerStatus("a")
		return st.Up && st.Queued == 0 && st.InFlight == 0
	})
	if out.count(0) != 3 {
		t.Fatalf("outcomes: %v", out.got)
	}
	if got := metric(t, b.reg, "moha_link_connects_total", map[string]string{"peer": "a"}); got != 2 {
		t.Fatalf("connects = %v, want 2", got)
	}

	// An ACK for something never sent is a protocol error: the link closes.
	f2.send(frame{typ: frameAck, upTo: 99})
	expectClosed(t, f2.conn)
}

// TestHeartbeats: an idle link stays up on heartbeats; a peer that goes
// silent is declared dead after three intervals.
func TestHeartbeats(t *testing.T) {
	const hb = 50 * time.Millisecond
	fast := func(c *Config) { c.Heartbeat = hb }
	a, b := pair(t, fast, fast, newRecorder(), newRecorder())
	start := a.peerStatus("b").RecvBytes
	waitFor(t, 5*time.Second, "ten heartbeats", func() bool { return a.peerStatus("b").RecvBytes >= start+20 })
	if !a.up("b") || !b.up("a") || metric(t, a.reg, "moha_link_connects_total", map[string]string{"peer": "b"}) != 1 {
		t.Fatal("an idle link with heartbeats did not stay up")
	}

	a.stop(t) // so that only the silent fake below talks to b
	waitFor(t, 5*time.Second, "b sees a down", func() bool { return !b.up("a") })
	silent, err := dialFake(t, b.addr(), "a", "b", testSecret) // authenticates, then says nothing
	if err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	expectClosed(t, silent.conn)
	if took := time.Since(began); took > 3*time.Second {
		t.Fatalf("a silent link took %v to be declared dead", took)
	}
	waitFor(t, 5*time.Second, "b sees the silent peer down", func() bool { return !b.up("a") })
}
