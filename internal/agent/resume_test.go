package agent_test

import (
	"strconv"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/moha-project/moha/internal/agent"
)

// TestLogSessionResumes: the log session drops while nothing happens on the
// broker (here a client with its id and clean start 0 takes it over for a
// moment, leaving the session in place); the agent reconnects, resumes the
// session and its table returns to what it was, without over-stating.
func TestLogSessionResumes(t *testing.T) {
	c := startCluster(t, 2)
	sub := connect(t, addr(c, "node2"), "resume-sub", persistent(300))
	sub.subscribe("resume/#", 1)
	peerKnows(t, c, "node1", "node2", "resume/#", true)
	before := metricSum(t, c.MustNode("node2").HTTP, "moha_broker_session_losses_total")
	kicker := connect(t, addr(c, "node2"), agentOf(c, "node2").ClientIDs()[agent.RoleLog], persistent(300))
	kicker.disconnect()
	waitFor(t, 5*time.Second, "node2 to notice the loss", func() bool {
		return metricSum(t, c.MustNode("node2").HTTP, "moha_broker_session_losses_total") > before
	})
	waitSettled(t, c, "node2") // a session it knew would be stale, and it degraded, had lines been missed
	peerKnows(t, c, "node1", "node2", "resume/#", true)
	if st := agentOf(c, "node2").Status(); st.Interest.Stale != 0 {
		t.Fatalf("resumed, yet %d sessions stale: %s", st.Interest.Stale, st.DegradedReason)
	}
}

// TestForgedMarkersIgnored (issue 15 §2): a client publishes what looks
// like the data sessions' markers (8 bytes, one retained so that it comes
// back on every subscribe): they carry no token of this run, so the agent
// ignores them, counts them, and interest changes and forwarding go on.
func TestForgedMarkersIgnored(t *testing.T) {
	c := startCluster(t, 2, followInterest) // markers end the data session's steps there
	evil := connect(t, addr(c, "node1"), "evil")
	forged := []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	for i := range 2 {
		evil.publish(&paho.Publish{Topic: "$moha/node1/mark/" + strconv.Itoa(i), QoS: 1, Payload: forged, Retain: i == 0})
	}
	waitFor(t, 5*time.Second, "node1 to count the forged markers", func() bool {
		return metricSum(t, c.MustNode("node1").HTTP, "moha_security_events_total") >= 1
	})
	sub := connect(t, addr(c, "node2"), "forged-sub")
	sub.subscribe("forged/#", 1)
	peerKnows(t, c, "node1", "node2", "forged/#", true)
	connect(t, addr(c, "node1"), "forged-pub").pub("forged/x", 1, "ok")
	if got := sub.expect(1, 5*time.Second); string(got[0].Payload) != "ok" {
		t.Fatalf("got %q", got[0].Payload)
	}
}
