// Package testutil holds helpers the project's tests share: the TCP
// listeners this process holds, a scrape of a Prometheus text endpoint, a
// slog handler that keeps each message's attributes, and network
// namespaces for the privileged tests. Only tests import it.
package testutil
