package agent_test

import (
	"testing"
	"time"

	"github.com/moha-project/moha/internal/agent"
)

// TestForeignSessionDetected (issue 15 §1): a client that connects with one
// of the agent's client ids (here the live data session's, as one holding
// the cluster secret could) is noticed from the broker's connect line — it did
// not come from one of the agent's own connections — counted and logged;
// the agent reconnects and the node settles again. The agent's own
// connections, including every reconnect, are never counted.
func TestForeignSessionDetected(t *testing.T) {
	c := startCluster(t, 2)
	http1 := c.MustNode("node1").HTTP
	if n := metricSum(t, http1, "moha_security_events_total"); n != 0 {
		t.Fatalf("%v security events before any attack: the agent's own connections were taken for foreign", n)
	}
	intruder := connect(t, addr(c, "node1"), agentOf(c, "node1").Status().Data.ClientID)
	waitFor(t, 5*time.Second, "the foreign session to be counted", func() bool {
		return metricSum(t, http1, "moha_security_events_total") >= 1
	})
	intruder.drop()
	waitSettled(t, c, "node1")
	sub := connect(t, addr(c, "node2"), "foreign-sub")
	sub.subscribe("foreign/#", 1)
	peerKnows(t, c, "node1", "node2", "foreign/#", true)
	connect(t, addr(c, "node1"), "foreign-pub").pub("foreign/x", 1, "after")
	sub.expectOnly("foreign/x", 5*time.Second)
}

// TestForeignLogSessionDetected (issue 15 §1): a client that takes the log
// session's id with clean start discards the session; its connect line
// reaches nobody the agent controls. The agent notices on reconnecting that
// the broker discarded its log session although it kept running, counts it,
// and settles again.
func TestForeignLogSessionDetected(t *testing.T) {
	c := startCluster(t, 2)
	http1 := c.MustNode("node1").HTTP
	intruder := connect(t, addr(c, "node1"), agentOf(c, "node1").ClientIDs()[agent.RoleLog])
	waitFor(t, 10*time.Second, "the discarded log session to be counted", func() bool {
		return metricSum(t, http1, "moha_security_events_total") >= 1
	})
	intruder.drop()
	waitSettled(t, c, "node1")
}
