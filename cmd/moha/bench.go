package main

import (
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/moha-project/moha/internal/bench"
)

func newBenchCommand(stdout, stderr io.Writer) *cobra.Command {
	var (
		urls                              []string
		scenario                          string
		publishers, subscribers, messages int
		size, pipeline, qos               int
		topic                             string
		timeout                           time.Duration
		asJSON, quiet                     bool
	)
	cmd := &cobra.Command{
		Use:   "bench --url HOST:PORT [--scenario seed|fanout|fanin|wildcard|local]",
		Short: "Load test any MQTT endpoint and measure end-to-end delivery",
		Long: `Load test one or more MQTT endpoints. Clients are spread over the --url
endpoints in turn (client i uses url i mod n). Every message carries a sequence
number and a timestamp, so the report shows what arrived, not only what was sent:
published, delivered, lost, duplicated, out of order, rates and end-to-end latency.

Scenarios:
  seed      the original experiment: 500 subscribers on test_1/0..499, 20
            publishers x 3000 messages of 100 bytes at QoS 1 to test_1/499
  fanout    one publisher, subscribers on every endpoint
  fanin     publishers on every endpoint, one subscriber with a + filter
  wildcard  subscribers on + and # filters
  local     publishers and subscribers on the same endpoint: nothing crosses

Flags left at 0 take the scenario's default.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o, err := bench.DefaultOptions(scenario)
			if err != nil {
				return err
			}
			o.URLs = urls
			setIf(&o.Publishers, publishers)
			setIf(&o.Subscribers, subscribers)
			setIf(&o.Messages, messages)
			setIf(&o.Size, size)
			setIf(&o.Pipeline, pipeline)
			if cmd.Flags().Changed("qos") {
				o.QoS = byte(qos)
			}
			if topic != "" {
				o.Topic = topic
			}
			if timeout > 0 {
				o.Timeout = timeout
			}
			if !quiet {
				o.Progress = stderr
			}
			if err := o.Validate(); err != nil {
				return err
			}
			r, err := bench.Run(cmd.Context(), o)
			if err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(r)
			}
			return r.WriteTable(stdout)
		},
	}
	f := cmd.Flags()
	f.StringArrayVar(&urls, "url", nil, "MQTT endpoint host:port or tcp://host:port (repeat to spread clients)")
	f.StringVar(&scenario, "scenario", "seed", "seed, fanout, fanin, wildcard or local")
	f.IntVar(&publishers, "publishers", 0, "publishing clients")
	f.IntVar(&subscribers, "subscribers", 0, "subscribing clients")
	f.IntVar(&messages, "messages", 0, "messages per publisher")
	f.IntVar(&size, "size", 0, "payload bytes per message")
	f.IntVar(&qos, "qos", 1, "QoS of publishes and subscriptions (0, 1 or 2)")
	f.IntVar(&pipeline, "pipeline", 0, "messages each publisher keeps in flight (1: wait for each)")
	f.StringVar(&topic, "topic", "", "seed: the topic publishers use")
	f.DurationVar(&timeout, "timeout", 0, "how long to wait for deliveries after the last publish")
	f.BoolVar(&asJSON, "json", false, "print the result as JSON")
	f.BoolVar(&quiet, "quiet", false, "no progress line")
	_ = cmd.MarkFlagRequired("url")
	cmd.AddCommand(newBenchCompareCommand(stdout, stderr), newBenchInterestCommand(stdout, stderr))
	return cmd
}

func setIf(dst *int, v int) {
	if v != 0 {
		*dst = v
	}
}

var _ = fmt.Sprint
