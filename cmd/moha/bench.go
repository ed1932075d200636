package main

import (
	"encoding/json"
	"io"

	"github.com/spf13/cobra"

	"github.com/moha-project/moha/internal/bench"
)

func newBenchCommand(stdout, stderr io.Writer) *cobra.Command {
	var (
		wf            workloadFlags
		urls          []string
		asJSON, quiet bool
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
			o, err := wf.options(cmd)
			if err != nil {
				return err
			}
			o.URLs = urls
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
	wf.register(f)
	f.StringArrayVar(&urls, "url", nil, "MQTT endpoint host:port or tcp://host:port (repeat to spread clients)")
	f.BoolVar(&asJSON, "json", false, "print the result as JSON")
	f.BoolVar(&quiet, "quiet", false, "no progress line")
	_ = cmd.MarkFlagRequired("url")
	cmd.AddCommand(newBenchCompareCommand(stdout, stderr), newBenchInterestCommand(stdout, stderr), newBenchWindowCommand(stdout, stderr), newBenchStormCommand(stdout, stderr), newBenchRejoinCommand(stdout, stderr))
	return cmd
}
