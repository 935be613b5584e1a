// Package prometheus holds vipkeeper's Prometheus alerting rules
// (vipkeeper.rules.yml): a VIP with no holder or two, or held by a
// member hostsync does not record as the owner, an agent's outbox that
// does not drain, applies of the metadata that keep failing, a data plane
// that fails or holds mappings its registry does not know, and a host
// without its etcd lease.
//
// It has no Go API. Its tests check the rules with Debian's promtool
// (`promtool check rules`), run their unit tests on synthetic series
// (`promtool test rules vipkeeper.rules.test.yml`), and check that every
// metric and label the rules use is one the daemons register.
package prometheus
