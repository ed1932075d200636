package main

import (
	"context"
	"io"

	"github.com/spf13/cobra"

	"github.com/moha-project/moha/internal/bench"
)

func newBenchWindowCommand(stdout, stderr io.Writer) *cobra.Command {
	var (
		iterations int
		settings   []string
		out        = benchOutput{stdout: stdout, stderr: stderr}
	)
	cmd := &cobra.Command{
		Use:   "window [--iterations 1000] [--data-subscription all,interest]",
		Short: "Measure the subscribe window: a publish on one node the moment a subscription on another is acknowledged",
		Long: `Start a two-node moha cluster (real brokers, agents as child processes) per
data_subscription setting. Each iteration a client on node2 subscribes to a fresh
topic and, as soon as its SUBACK is in, a client on node1 publishes one QoS 1
message to it. One broker delivers every such message. Reported per setting:

  lost                  messages that never arrived
  replayed              of those that did, how many node1 sent from its replay history
                        (it learned of the subscription after taking the message)
  SUBACK to arrival     p50 and p99 over the delivered messages`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			measure := func(ctx context.Context, self string, progress io.Writer) ([]bench.WindowRow, error) {
				return bench.MeasureWindow(ctx, bench.WindowOptions{Iterations: iterations, Settings: settings, AgentBinary: self, Progress: progress})
			}
			return runBench(cmd.Context(), &out, measure, bench.WriteWindowTable)
		},
	}
	f := cmd.Flags()
	f.IntVar(&iterations, "iterations", 1000, "subscribe-then-publish pairs per setting")
	f.StringSliceVar(&settings, "data-subscription", []string{"all", "interest"}, "data_subscription settings to run, one cluster each")
	out.flags(f)
	return cmd
}
