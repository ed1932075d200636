package bench

import (
	"os"
	"testing"
)

// TestSeedFull runs the original experiment at full size against a private
// mosquitto; opt in with MOHA_BENCH_SEED=1 (it takes several seconds).
func TestSeedFull(t *testing.T) {
	if os.Getenv("MOHA_BENCH_SEED") == "" {
		t.Skip("set MOHA_BENCH_SEED=1 to run the full seed workload")
	}
	o, err := DefaultOptions(ScenarioSeed)
	if err != nil {
		t.Fatal(err)
	}
	o.URLs = []string{startMosquitto(t)}
	if os.Getenv("MOHA_BENCH_PIPELINE") == "8" {
		o.Pipeline = 8
	}
	res := runBench(t, o)
	var table syncBuffer
	_ = res.WriteTable(&table)
	t.Logf("\n%s", table.String())
	if res.Lost != 0 || res.Duplicated != 0 {
		t.Errorf("lost %d, duplicated %d", res.Lost, res.Duplicated)
	}
}
