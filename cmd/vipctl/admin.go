package main

import (
	"context"
	"fmt"
	"io"
)

func runAdmin(ctx context.Context, cmd string, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fmt.Fprintf(stderr, "vipctl %s: not implemented yet\n", cmd)
	return exitFailure
}
