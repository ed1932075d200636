package mesh

import (
	"fmt"
	"reflect"
	"sync"
	"testing"
	"time"
)

// TestSessionsCrossInParts: a SESSIONS message larger than a part arrives
// as one change, whole and in order, with its Replace flag; a later small
// one follows it.
func TestSessionsCrossInParts(t *testing.T) {
	const n = 20000
	var mu sync.Mutex
	var got []SessionChange
	hb := newRecorder().handlers()
	hb.Sessions = func(_ string, ch SessionChange) {
		mu.Lock()
		got = append(got, ch)
		mu.Unlock()
	}
	b := startMesh(t, testConfig(t, "b", map[string]string{"a": closedAddr(t)}), hb)
	a := startMesh(t, testConfig(t, "a", map[string]string{"b": b.addr()}), newRecorder().handlers())
	waitFor(t, 10*time.Second, "a's link to b", func() bool { return a.linkOf("b") != nil })

	whole := SessionChange{Replace: true}
	for i := range n {
		whole.Notes = append(whole.Notes, SessionNote{ID: fmt.Sprintf("device-%06d", i), Online: i%2 == 0, Protocol: 4,
			Filters: []SessionFilter{{Filter: fmt.Sprintf("devices/%06d/cmd", i), QoS: 1}}})
	}
	drop := SessionChange{Notes: []SessionNote{{ID: "device-000001", Drop: true}}}
	if !a.SendSessions("b", whole) || !a.SendSessions("b", drop) {
		t.Fatal("sessions not queued on a live link")
	}
	if a.SendSessions("nobody", drop) {
		t.Fatal("queued for an unknown peer")
	}
	waitFor(t, 10*time.Second, "both changes at b", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(got) == 2
	})
	mu.Lock()
	defer mu.Unlock()
	if !reflect.DeepEqual(got[0], whole) {
		t.Fatalf("first change: replace %v, %d notes; want the %d sent, in order", got[0].Replace, len(got[0].Notes), n)
	}
	if !reflect.DeepEqual(got[1], drop) {
		t.Fatalf("second change = %+v, want %+v", got[1], drop)
	}
}
