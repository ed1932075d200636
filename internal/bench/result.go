package bench

import (
	"fmt"
	"io"
	"text/tabwriter"
	"time"
)

// Result is what one run measured. Durations are time.Duration, so in
// JSON they are integer nanoseconds.
type Result struct {
	Scenario    string `json:"scenario"`
	Publishers  int    `json:"publishers"`
	Subscribers int    `json:"subscribers"`
	Messages    int    `json:"messages"` // per publisher
	Size        int    `json:"size"`
	Payload     string `json:"payload,omitempty"` // PayloadJSON, or empty for zero padding
	QoS         byte   `json:"qos"`
	Pipeline    int    `json:"pipeline"`
	Persistent  bool   `json:"persistent"` // subscribers kept persistent sessions

	Published     int64 `json:"published"` // acknowledged by the broker (QoS 0: written)
	PublishErrors int64 `json:"publish_errors"`
	Expected      int64 `json:"expected"`     // deliveries the scenario calls for
	Delivered     int64 `json:"delivered"`    // distinct expected deliveries that arrived
	Lost          int64 `json:"lost"`         // Expected - Delivered
	Duplicated    int64 `json:"duplicated"`   // repeated arrivals of a delivered message
	OutOfOrder    int64 `json:"out_of_order"` // first arrivals below the stream's highest sequence
	Stray         int64 `json:"stray"`        // arrivals not from this run or not expected on that stream
	Disconnects   int64 `json:"disconnects"`  // clients whose connection ended before the run closed it
	// CrossDelivered counts the deliveries (of Delivered) whose publisher
	// used another address than the subscriber: with one address per
	// node, the deliveries that crossed between nodes.
	CrossDelivered int64 `json:"cross_delivered"`

	// Duration runs from the first publish to the last delivery (to the
	// end of publishing when nothing was delivered).
	Duration        time.Duration `json:"duration"`
	PublishDuration time.Duration `json:"publish_duration"` // first publish to last acknowledgement
	PublishRate     float64       `json:"publish_rate"`     // msg/s, all publishers
	DeliveredRate   float64       `json:"delivered_rate"`   // msg/s, all subscribers
	// CrossDeliveredRate is CrossDelivered over the time from the first
	// publish to the last cross-address delivery.
	CrossDeliveredRate float64 `json:"cross_delivered_rate"`
	// PublishRatePerClient is the mean of each publisher's own rate.
	PublishRatePerClient float64 `json:"publish_rate_per_client"`

	LatencyP50 time.Duration `json:"latency_p50"` // end to end, publish call to arrival
	LatencyP95 time.Duration `json:"latency_p95"`
	LatencyP99 time.Duration `json:"latency_p99"`
	LatencyMax time.Duration `json:"latency_max"`
}

// result computes the Result of a finished run; clients must be closed.
func (r *runner) result() *Result {
	o := r.opts
	sum := r.tally.summary()
	res := &Result{
		Scenario: o.Scenario, Publishers: o.Publishers, Subscribers: o.Subscribers,
		Messages: o.Messages, Size: o.Size, Payload: o.Payload, QoS: o.QoS, Pipeline: o.Pipeline, Persistent: o.Persistent,
		Expected:       r.plan.Expected,
		Delivered:      sum.Delivered,
		CrossDelivered: sum.CrossNode,
		Lost:           r.plan.Expected - sum.Delivered,
		Duplicated:     sum.Duplicated,
		OutOfOrder:     sum.OutOfOrder,
		Stray:          sum.Stray,
		Disconnects:    r.disconnects.Load(),
		LatencyP50:     percentile(sum.Latencies, 0.50),
		LatencyP95:     percentile(sum.Latencies, 0.95),
		LatencyP99:     percentile(sum.Latencies, 0.99),
		LatencyMax:     percentile(sum.Latencies, 1),
	}
	res.Published, res.PublishErrors = r.publishCounts()
	if !r.firstPublish.IsZero() {
		res.PublishDuration = r.lastPublish.Sub(r.firstPublish)
		res.Duration = res.PublishDuration
		if last := r.tally.lastArrival.Load(); last != 0 {
			res.Duration = time.Unix(0, last).Sub(r.firstPublish)
		}
	}
	res.PublishRate = rate(res.Published, res.PublishDuration)
	res.DeliveredRate = rate(res.Delivered, res.Duration)
	if last := r.tally.lastCrossArrival.Load(); last != 0 && !r.firstPublish.IsZero() {
		res.CrossDeliveredRate = rate(res.CrossDelivered, time.Unix(0, last).Sub(r.firstPublish))
	}
	res.PublishRatePerClient = r.meanPublisherRate()
	return res
}

func (r *runner) meanPublisherRate() float64 {
	if len(r.publishers) == 0 {
		return 0
	}
	var total float64
	for _, p := range r.publishers {
		total += rate(p.published.Load(), p.end.Sub(p.start))
	}
	return total / float64(len(r.publishers))
}

func rate(n int64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}

// WriteTable writes the result as a two-column human table.
func (r *Result) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	rows := []struct {
		name  string
		value any
	}{
		{"scenario", r.Scenario},
		{"clients", fmt.Sprintf("%d publishers, %d subscribers", r.Publishers, r.Subscribers)},
		{"workload", fmt.Sprintf("%d msg/publisher, %d bytes, QoS %d, pipeline %d", r.Messages, r.Size, r.QoS, r.Pipeline)},
		{"published", fmt.Sprintf("%d (%d errors)", r.Published, r.PublishErrors)},
		{"expected", r.Expected},
		{"delivered", r.Delivered},
		{"lost", r.Lost},
		{"duplicated", r.Duplicated},
		{"out of order", r.OutOfOrder},
		{"stray", r.Stray},
		{"disconnects", r.Disconnects},
		{"duration", r.Duration.Round(time.Millisecond)},
		{"publish duration", r.PublishDuration.Round(time.Millisecond)},
		{"publish rate", fmt.Sprintf("%.0f msg/s (%.0f msg/s per publisher)", r.PublishRate, r.PublishRatePerClient)},
		{"delivered rate", fmt.Sprintf("%.0f msg/s", r.DeliveredRate)},
		{"cross-address delivered", fmt.Sprintf("%d (%.0f msg/s)", r.CrossDelivered, r.CrossDeliveredRate)},
		{"latency p50/p95/p99/max", fmt.Sprintf("%s / %s / %s / %s", roundLatency(r.LatencyP50),
			roundLatency(r.LatencyP95), roundLatency(r.LatencyP99), roundLatency(r.LatencyMax))},
	}
	for _, row := range rows {
		if _, err := fmt.Fprintf(tw, "%s\t%v\n", row.name, row.value); err != nil {
			return fmt.Errorf("write result table: %w", err)
		}
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("write result table: %w", err)
	}
	return nil
}

func roundLatency(d time.Duration) time.Duration {
	if d >= time.Millisecond {
		return d.Round(10 * time.Microsecond)
	}
	return d.Round(time.Microsecond)
}
