package bench_test

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/moha-project/moha/internal/message"
	"github.com/moha-project/moha/internal/session"
	"github.com/moha-project/moha/internal/testkit"
)

// BenchmarkReplicaSessions is issue 16's first experiment (docs/SESSIONS.md):
// what a replica of each persistent session costs a stock Mosquitto. A
// replica is an offline persistent session with the client's id and
// filters on another node's broker: the broker queues for it what the
// client would get, ready for the client to resume there. Here one broker
// holds both the subscribers and (replicas=1) one such offline session
// per subscriber, so that its cost shows against the same traffic.
//
// Reported per published message: broker CPU, and (replicas=1) the RSS the
// queued copies take and the CPU of draining them (connecting as the
// replica and acknowledging everything, as an agent trimming it would).
//
//	go test -run '^$' -bench BenchmarkReplicaSessions -benchtime 1x ./internal/bench
func BenchmarkReplicaSessions(b *testing.B) {
	for _, replicas := range []int{0, 1} {
		b.Run(fmt.Sprintf("replicas=%d", replicas), func(b *testing.B) {
			for range b.N {
				replicaRun(b, replicas)
			}
		})
	}
}

const (
	replicaSubscribers = 200
	replicaMessages    = 100 // per subscriber's topic
)

func replicaRun(b *testing.B, replicas int) {
	broker := testkit.StartBroker(b, "max_inflight_messages 1000")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	topic := func(i int) string { return "exp/" + strconv.Itoa(i) }

	if replicas > 0 {
		for i := range replicaSubscribers {
			replicaSession(b, ctx, broker.Addr, "replica-"+strconv.Itoa(i), topic(i), nil)
		}
	}
	var delivered atomic.Int64
	total := int64(replicaSubscribers * replicaMessages)
	allIn := make(chan struct{})
	for i := range replicaSubscribers {
		s, err := session.Dial(ctx, session.Config{Addr: broker.Addr, ClientID: "sub-" + strconv.Itoa(i), CleanStart: true}, func(d *session.Delivery) {
			d.Ack()
			if delivered.Add(1) == total {
				close(allIn)
			}
		})
		if err != nil {
			b.Fatal(err)
		}
		defer s.Close()
		if err := s.Subscribe(ctx, session.Subscription{Filter: topic(i), QoS: 1}); err != nil {
			b.Fatal(err)
		}
	}
	pub, err := session.Dial(ctx, session.Config{Addr: broker.Addr, ClientID: "pub", CleanStart: true}, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer pub.Close()

	cpu0, rss0 := procCPU(b, broker.Pid()), procRSS(b, broker.Pid())
	b.ResetTimer()
	for m := range replicaMessages {
		for i := range replicaSubscribers {
			pub.Publish(message.Message{Topic: topic(i), QoS: 1, Payload: []byte(strconv.Itoa(m) + " replica experiment payload, about 100 bytes ............................")}, func(error) {})
		}
	}
	select {
	case <-allIn:
	case <-ctx.Done():
		b.Fatalf("delivered %d of %d", delivered.Load(), total)
	}
	b.StopTimer()
	defer b.StartTimer()
	cpu1, rss1 := procCPU(b, broker.Pid()), procRSS(b, broker.Pid())
	b.ReportMetric(float64((cpu1-cpu0).Microseconds())/float64(total), "broker-µs/msg")
	if replicas == 0 {
		return
	}
	b.ReportMetric(float64(rss1-rss0)/float64(total), "queued-B/msg")
	var drained atomic.Int64
	for i := range replicaSubscribers {
		replicaSession(b, ctx, broker.Addr, "replica-"+strconv.Itoa(i), "", &drained)
	}
	testkit.WaitFor(b, 30*time.Second, "the replicas drained", func() bool { return drained.Load() >= total })
	cpu2 := procCPU(b, broker.Pid())
	b.ReportMetric(float64((cpu2-cpu1).Microseconds())/float64(total), "drain-broker-µs/msg")
}

// replicaSession connects as a replica (persistent session). With filter
// it subscribes and leaves the session offline; with drained it takes and
// acknowledges what the session queued, counting it, and stays connected
// until the benchmark ends.
func replicaSession(b *testing.B, ctx context.Context, addr, id, filter string, drained *atomic.Int64) {
	s, err := session.Dial(ctx, session.Config{Addr: addr, ClientID: id, SessionExpiry: 3600}, func(d *session.Delivery) {
		d.Ack()
		if drained != nil {
			drained.Add(1)
		}
	})
	if err != nil {
		b.Fatal(err)
	}
	if filter == "" {
		b.Cleanup(func() { s.Close() })
		return
	}
	if err := s.Subscribe(ctx, session.Subscription{Filter: filter, QoS: 1}); err != nil {
		b.Fatal(err)
	}
	s.Close()
}

// procCPU returns a process's user+system CPU time.
func procCPU(b *testing.B, pid int) time.Duration {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	// Fields after the command name (which may hold spaces) start after ") ".
	fields := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+2:]))
	utime, _ := strconv.ParseInt(fields[11], 10, 64)
	stime, _ := strconv.ParseInt(fields[12], 10, 64)
	return time.Duration(utime+stime) * time.Second / 100 // USER_HZ
}

// procRSS returns a process's resident set size in bytes.
func procRSS(b *testing.B, pid int) int64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/statm", pid))
	if err != nil {
		b.Fatal(err)
	}
	fields := strings.Fields(string(data))
	pages, _ := strconv.ParseInt(fields[1], 10, 64)
	return pages * int64(os.Getpagesize())
}
