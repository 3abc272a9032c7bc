package integration

import (
	"context"
	"os/exec"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestBenchHarnessSmoke runs the benchmark harness on small sizes, so that
// it cannot rot. It checks that it runs and prints its tables, not the
// figures (timings are not tests).
func TestBenchHarnessSmoke(t *testing.T) {
	skipShort(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "run", "./bench", "-smoke")
	cmd.Dir = ".."
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)
	for _, want := range []string{"| upload-raw |", "| upload-multipart |", "| download |", "| gateway |",
		"| reverse_proxy |", "| direct |", "| buffered |", "1 KB uploads/s at 32-way", "server CPU", "SHA-256 on one core",
		"refused uploads trickling", "slow uploads: refused 429", "fast drains",
		"delivery rules: 16 MB H.264 video", "| | raw |", "| | multipart |", "samples)",
		"upload from a URL", "| url |"} {
		assert.Contains(t, string(out), want)
	}
}
