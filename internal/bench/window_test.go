package bench

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"
)

// TestMeasureWindow: with the default data_subscription nothing published
// at a SUBACK on another node is lost; the table names the figures.
func TestMeasureWindow(t *testing.T) {
	bin := mohaBinary(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rows, err := MeasureWindow(ctx, WindowOptions{Iterations: 100, Settings: []string{"all"}, AgentBinary: bin, Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if r := rows[0]; r.Lost != 0 || r.Iterations != 100 || r.P99 <= 0 {
		t.Fatalf("row %+v", r)
	}
	var buf bytes.Buffer
	if err := WriteWindowTable(&buf, rows); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), "SUBACK to arrival") {
		t.Fatalf("table:\n%s", buf.String())
	}
	if _, err := MeasureWindow(ctx, WindowOptions{Settings: []string{"some"}, AgentBinary: bin}); err == nil {
		t.Fatal("an unknown data_subscription was accepted")
	}
}
