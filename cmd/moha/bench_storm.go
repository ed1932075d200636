package main

import (
	"context"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/moha-project/moha/internal/bench"
)

func newBenchStormCommand(stdout, stderr io.Writer) *cobra.Command {
	var (
		clients, rate int
		within        time.Duration
		out           = benchOutput{stdout: stdout, stderr: stderr}
	)
	cmd := &cobra.Command{
		Use:   "storm [--clients 2000] [--within 10s]",
		Short: "Measure a reconnect storm: a node's broker restarts and its persistent clients all come back",
		Long: `Start a two-node moha cluster (real brokers, agents as child processes), make
--clients persistent sessions on node2 (MQTT v5, clean start 0, one
devices/<i>/cmd subscription each, then offline), and keep a publisher on node1
sending QoS 1 messages to them at --rate. Then node2's broker restarts (a clean
stop: its sessions are saved) and every client reconnects with clean start 0 at
a random moment within --within. Reported:

  session present   reconnects that found their session
  storm             first reconnect to the last CONNACK
  interest exact    from the last CONNACK until node1 routes by exactly the
                    clients' filters again and node2's agent is not degraded
  holder degraded   how long node2's agent was seen advertising everything
  published, lost   messages node1's broker acknowledged, and those of them no
                    client received (each client's messages go to its session,
                    queued while it is offline)

The number of clients is bounded by the open-file limit of this process and of
the broker (ulimit -n).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			measure := func(ctx context.Context, self string, progress io.Writer) (bench.StormResult, error) {
				return bench.MeasureStorm(ctx, bench.StormOptions{Clients: clients, Within: within, Rate: rate, AgentBinary: self, Progress: progress})
			}
			return runBench(cmd.Context(), &out, measure, bench.WriteStormTable)
		},
	}
	f := cmd.Flags()
	f.IntVar(&clients, "clients", 2000, "persistent-session clients on node2")
	f.DurationVar(&within, "within", 10*time.Second, "the clients reconnect spread over this")
	f.IntVar(&rate, "rate", 500, "messages a second node1's publisher sends to the clients")
	out.flags(f)
	return cmd
}
