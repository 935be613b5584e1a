package main

import (
	"context"
	"fmt"
	"io"
)

func runRender(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fmt.Fprintln(stderr, "vipctl render: not implemented yet")
	return exitFailure
}

func runCheck(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fmt.Fprintln(stderr, "vipctl check: not implemented yet")
	return exitFailure
}
