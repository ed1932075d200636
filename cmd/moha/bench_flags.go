package main

import (
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/moha-project/moha/internal/bench"
)

// workloadFlags are the flags that describe a bench workload, shared by
// `moha bench` and `moha bench compare`. Zero means the scenario's default.
type workloadFlags struct {
	scenario                          string
	publishers, subscribers, messages int
	size, pipeline, qos               int
	topic, payload                    string
	timeout                           time.Duration
	persistent                        bool
}

func (w *workloadFlags) register(f *pflag.FlagSet) {
	f.StringVar(&w.scenario, "scenario", "seed", "seed, fanout, fanin, wildcard or local")
	f.IntVar(&w.publishers, "publishers", 0, "publishing clients")
	f.IntVar(&w.subscribers, "subscribers", 0, "subscribing clients")
	f.IntVar(&w.messages, "messages", 0, "messages per publisher")
	f.IntVar(&w.size, "size", 0, "payload bytes per message")
	f.StringVar(&w.payload, "payload", "zeros", "what follows each payload's header: zeros (padding to --size) or json (a telemetry document of about 190 bytes with realistic field names and changing values; --size is ignored)")
	f.IntVar(&w.qos, "qos", 1, "QoS of publishes and subscriptions (0, 1 or 2)")
	f.IntVar(&w.pipeline, "pipeline", 0, "messages each publisher keeps in flight (1: wait for each)")
	f.StringVar(&w.topic, "topic", "", "seed: the topic publishers use (a smaller seed needs test_1/<subscribers-1>)")
	f.DurationVar(&w.timeout, "timeout", 0, "how long to wait for deliveries after the last publish")
	f.BoolVar(&w.persistent, "persistent", false, "subscribers keep persistent sessions (clean start 0, session expiry 1 h): with moha, each is replicated to the other node (session_replicas)")
}

// options returns the scenario's defaults with the flags given on top.
func (w *workloadFlags) options(cmd *cobra.Command) (bench.Options, error) {
	o, err := bench.DefaultOptions(w.scenario)
	if err != nil {
		return o, err
	}
	setIf(&o.Publishers, w.publishers)
	setIf(&o.Subscribers, w.subscribers)
	setIf(&o.Messages, w.messages)
	setIf(&o.Size, w.size)
	setIf(&o.Pipeline, w.pipeline)
	if cmd.Flags().Changed("qos") {
		o.QoS = byte(w.qos)
	}
	if w.topic != "" {
		o.Topic = w.topic
	}
	if w.timeout > 0 {
		o.Timeout = w.timeout
	}
	o.Persistent = w.persistent
	o.Payload = w.payload
	return o, nil
}

func setIf(dst *int, v int) {
	if v != 0 {
		*dst = v
	}
}
