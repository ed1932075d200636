package session

import (
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/moha-project/moha/internal/message"
)

// BenchmarkRoundTrip publishes 100-byte QoS 1 messages on one session into a
// real mosquitto and receives them on a second session subscribed to # (the
// agent's data subscription), acknowledging each as it arrives. The publisher
// keeps at most the broker's Receive Maximum in flight: 20 with mosquitto's
// defaults, 1000 with max_inflight_messages raised.
func BenchmarkRoundTrip(b *testing.B) {
	b.Run("receive-max-20", func(b *testing.B) { benchRoundTrip(b) })
	b.Run("receive-max-1000", func(b *testing.B) { benchRoundTrip(b, "max_inflight_messages 1000") })
}

func benchRoundTrip(b *testing.B, brokerConf ...string) {
	br := startBroker(b, brokerConf...)
	var received atomic.Int64
	sub := dial(b, br.Addr, "bench-sub", func(d *Delivery) {
		d.Ack()
		received.Add(1)
	})
	subscribe(b, sub, dataSub("#", 2))
	pub := dial(b, br.Addr, "bench-pub", nil)

	// Bound what is queued so a large b.N does not hold every message in memory.
	const outstanding = 2000
	slots := make(chan struct{}, outstanding)
	var failed atomic.Int64
	done := func(err error) {
		if err != nil {
			failed.Add(1)
		}
		<-slots
	}
	payload := make([]byte, 100)
	b.ReportAllocs()
	b.ResetTimer()
	start, cpuStart := time.Now(), processCPU(b)
	for range b.N {
		slots <- struct{}{}
		pub.Publish(message.Message{Topic: "bench/topic", Payload: payload, QoS: 1}, done)
	}
	deadline := time.Now().Add(time.Minute)
	for received.Load() < int64(b.N) && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	elapsed, cpu := time.Since(start), processCPU(b)-cpuStart
	b.StopTimer()
	if got := received.Load(); got != int64(b.N) {
		b.Fatalf("received %d of %d", got, b.N)
	}
	if n := failed.Load(); n > 0 {
		b.Fatalf("%d publishes failed", n)
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "msg/s")
	// CPU per message of this process (both sessions) is steadier than msg/s
	// on a machine shared with other work.
	b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/msg")
}

// processCPU is the user+system CPU time this process used so far.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatalf("getrusage: %v", err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
