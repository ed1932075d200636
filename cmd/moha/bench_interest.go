package main

import (
	"context"
	"io"

	"github.com/spf13/cobra"

	"github.com/moha-project/moha/internal/bench"
)

func newBenchInterestCommand(stdout, stderr io.Writer) *cobra.Command {
	var (
		subs       []int
		clients    int
		out        = benchOutput{stdout: stdout, stderr: stderr}
		persistent bool
		agentArgs  []string
		replicas   int
		dataSub    string
	)
	cmd := &cobra.Command{
		Use:   "interest [--subscriptions 10000,100000]",
		Short: "Measure agent memory and interest propagation against the number of subscriptions",
		Long: `Start a two-node moha cluster (real brokers, agents as child processes) per
run, subscribe N distinct filters on node2 and report:

  subscribe           first SUBSCRIBE to the last SUBACK
  propagated to peer  first SUBSCRIBE until node1's agent advertises all N for node2
  agent RSS           resident memory of node2's agent (its interest table) and of
                      node1's (its routing trie for node2), before and after

A run fails if node2's agent turns degraded (its picture of the subscriptions is
incomplete, for instance because the broker dropped log lines it could not queue).
With --persistent the clients keep persistent sessions and disconnect once
subscribed, as a fleet of devices does.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			measure := func(ctx context.Context, self string, progress io.Writer) ([]bench.InterestRow, error) {
				o := bench.InterestOptions{Subscriptions: subs, Clients: clients, Persistent: persistent,
					AgentBinary: self, AgentArgs: agentArgs, Progress: progress, DataSubscription: dataSub}
				if cmd.Flags().Changed("session-replicas") {
					o.SessionReplicas = &replicas
				}
				return bench.MeasureInterest(ctx, o)
			}
			return runBench(cmd.Context(), &out, measure, bench.WriteInterestTable)
		},
	}
	f := cmd.Flags()
	f.IntSliceVar(&subs, "subscriptions", []int{10000, 100000}, "distinct subscriptions per run (comma separated)")
	f.IntVar(&clients, "clients", 10, "subscribing clients sharing them")
	f.BoolVar(&persistent, "persistent", false, "clients keep persistent sessions (clean start 0, expiry 1 h) and disconnect once subscribed")
	f.IntVar(&replicas, "session-replicas", 1, "session_replicas of the cluster (0 or 1 with two nodes): with --persistent, each session is replicated to the other node")
	f.StringVar(&dataSub, "data-subscription", "", "data_subscription of the cluster (all or interest; default: the cluster default, all); the table's last column is what the peer's data session then subscribes")
	f.StringArrayVar(&agentArgs, "agent-arg", nil, "extra argument for both agents, e.g. --agent-arg=--pprof (repeat)")
	out.flags(f)
	return cmd
}
