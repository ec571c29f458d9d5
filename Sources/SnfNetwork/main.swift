// snf-network: Ganeti's NIC up/down scripts (KVM kvm-vif-bridge and network/<mode>/{up,down}),
// Xen's vif-custom and the cleanup hook, all one binary dispatched on argv[0]. The logic is in
// the NetworkSetup library; this only reads argv and the environment and maps the outcome to an
// exit code and one stderr line.

import NetworkSetup
import NodeSupport

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

let result = runSnfNetwork(arguments: CommandLine.arguments, environment: processEnvironment())
if !result.output.isEmpty { writeAll(1, result.output) }
if let message = result.error { writeAll(2, message + "\n") }
exit(result.status)
