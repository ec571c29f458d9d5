// The environment Ganeti 3.0 gave an OS create script (a real dump: /work/shared/ganeti/env/os-create.env).
enum Fixtures {
    static let osCreateEnv = #"""
# script: /srv/ganeti/os/toyos/create
# argc: 0
# cwd: /srv/ganeti/os/toyos
# uid: 0 gid: 0 user: root
# stdin: pipe:[107735]
# stdout: /var/log/ganeti-toy/os-create.1795423373843987590.4367.env
# stderr: /var/log/ganeti/os/add-toyos+default-inst2.ganeti.test-2026-11-23_08_42_53.log
# hostname: node1.ganeti.test
# date: 2026-11-23T08:42:53Z
# ---- environment (env -0 | sort) ----
DEBUG_LEVEL=0
DISK_0_ACCESS=rw
DISK_0_BACKEND_TYPE=block
DISK_0_PATH=/dev/loop0
DISK_0_SIZE=64
DISK_0_UUID=d0523d1a-bc8d-47c7-bcad-7879219ac4e9
DISK_COUNT=1
HYPERVISOR=fake
INSTANCE_BE_always_failover=False
INSTANCE_BE_auto_balance=True
INSTANCE_BE_maxmem=64
INSTANCE_BE_minmem=64
INSTANCE_BE_spindle_use=1
INSTANCE_BE_vcpus=1
INSTANCE_CTIME=1795423373.054264
INSTANCE_HV_migration_mode=live
INSTANCE_MTIME=1795423373.071619
INSTANCE_NAME=inst2.ganeti.test
INSTANCE_OS=toyos+default
INSTANCE_PRIMARY_NODE=3e93b45e-7342-480d-bff2-3b39b6df29d6
INSTANCE_SECONDARY_NODES=
INSTANCE_UUID=34dd70f4-d59f-41f0-a4b4-4f155f4e6e45
NIC_0_BRIDGE=gnt-br0
NIC_0_LINK=gnt-br0
NIC_0_MAC=aa:00:00:17:c0:be
NIC_0_MODE=bridged
NIC_0_UUID=2d0967ec-f666-44c1-8239-6d16c711b6a8
NIC_COUNT=1
OSP_A=b
OSP_FLAVOR=x
OS_API_VERSION=20
OS_NAME=toyos
OS_VARIANT=default
PATH=/sbin:/bin:/usr/sbin:/usr/bin
PWD=/srv/ganeti/os/toyos
SHLVL=1
_=/bin/env
"""#

    /// The dump as a dictionary (comment lines skipped).
    static var osCreate: [String: String] {
        var result: [String: String] = [:]
        for line in osCreateEnv.split(separator: "\n") where !line.hasPrefix("#") {
            guard let equals = line.firstIndex(of: "=") else { continue }
            result[String(line[..<equals])] = String(line[line.index(after: equals)...])
        }
        return result
    }
}
