package agent_test

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/moha-project/moha/internal/config"
	"github.com/moha-project/moha/internal/launch"
	"github.com/moha-project/moha/internal/message"
	"github.com/moha-project/moha/internal/session"
	"github.com/moha-project/moha/internal/status"
)

// overflowMessages is more than the broker holds for the agent's data
// session: in flight up to the session's Receive Maximum (65535), then
// queued up to max_queued_messages (set to 100000 below).
const overflowMessages = 200_000

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// TestBrokerDropForAgentIsCounted (issue 14 §2): node1's agent hangs
// (SIGSTOP) while clients publish more than the broker queues for its data
// session. The broker then drops messages it had acknowledged to their
// publishers — a loss moha cannot prevent, and must not hide: once running
// again, the agent has counted the overflow of its own session
// (moha_broker_queue_overflows_total, /status broker.queue_overflows) and
// the broker's count of dropped messages.
func TestBrokerDropForAgentIsCounted(t *testing.T) {
	// The rendered default (a million) would need five times the messages.
	c := startProcessCluster(t, launch.Options{Nodes: 2, LBPort: -1, Configure: func(c *config.Cluster) { c.MaxQueuedMessages = 100000 }})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	http1 := c.MustNode("node1").HTTP
	agent1 := c.AgentProcess("node1")
	agent1.Signal(syscall.SIGSTOP)
	stopped := true
	defer func() {
		if stopped {
			agent1.Signal(syscall.SIGCONT)
		}
	}()

	pub, err := session.Dial(ctx, session.Config{Addr: addr(c, "node1"), ClientID: "overflow-pub", CleanStart: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	var acked, failed atomic.Int64
	done := make(chan struct{})
	for range overflowMessages {
		pub.Publish(message.Message{Topic: "ovf/x", QoS: 1, Payload: []byte("x")}, func(err error) {
			if err != nil {
				failed.Add(1)
			}
			if acked.Add(1) == overflowMessages {
				close(done)
			}
		})
	}
	select {
	case <-done:
	case <-ctx.Done():
		t.Fatalf("the broker acknowledged %d of %d publishes", acked.Load(), overflowMessages)
	}
	if failed.Load() != 0 {
		t.Fatalf("%d publishes failed", failed.Load())
	}
	agent1.Signal(syscall.SIGCONT)
	stopped = false
	t.Cleanup(func() {
		if t.Failed() {
			log, _ := os.ReadFile(filepath.Join(c.Dir, "logs", "agent-node1.log"))
			t.Logf("node1's agent log:\n%s", tail(log, 3000))
		}
	})
	waitFor(t, 30*time.Second, "node1's agent to count the overflow of its session and the broker's drops", func() bool {
		return metricSum(t, http1, "moha_broker_queue_overflows_total") >= 1 && metricSum(t, http1, "moha_broker_dropped_messages_total") > 0
	})
	resp, err := http.Get("http://" + http1 + "/status")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st status.Status
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatal(err)
	}
	if st.Broker.QueueOverflows == 0 || st.Broker.DroppedMessages == 0 {
		t.Fatalf("/status broker: %+v, want the overflow and the drops shown", st.Broker)
	}
	t.Logf("overflows counted %v, broker dropped %v of %d", metricSum(t, http1, "moha_broker_queue_overflows_total"),
		metricSum(t, http1, "moha_broker_dropped_messages_total"), overflowMessages)
}
