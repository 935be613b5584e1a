// Package prometheus holds vipkeeper's Prometheus alerting rules
// (vipkeeper.rules.yml): a VIP with no holder or two, an agent's outbox
// that does not drain, applies of the metadata that keep failing, and a
// data plane that fails or holds mappings its registry does not know.
//
// It has no Go API. Its tests check the rules with Debian's promtool
// (`promtool check rules`), run their unit tests on synthetic series
// (`promtool test rules vipkeeper.rules.test.yml`), and check that every
// metric and label the rules use is one the daemons register.
package prometheus
