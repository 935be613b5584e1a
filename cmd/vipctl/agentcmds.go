package main

import (
	"context"
	"fmt"
	"io"
)

func runNotify(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fmt.Fprintln(stderr, "vipctl notify: not implemented yet")
	return exitFailure
}

func runStatus(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fmt.Fprintln(stderr, "vipctl status: not implemented yet")
	return exitFailure
}

func runHistory(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fmt.Fprintln(stderr, "vipctl history: not implemented yet")
	return exitFailure
}
