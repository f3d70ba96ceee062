from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AgentDetails(_message.Message):
    __slots__ = ["device_handlers", "init_daemon", "storage_handlers", "version"]
    DEVICE_HANDLERS_FIELD_NUMBER: _ClassVar[int]
    INIT_DAEMON_FIELD_NUMBER: _ClassVar[int]
    STORAGE_HANDLERS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    device_handlers: _containers.RepeatedScalarFieldContainer[str]
    init_daemon: bool
    storage_handlers: _containers.RepeatedScalarFieldContainer[str]
    version: str
    def __init__(self, version: _Optional[str] = ..., init_daemon: bool = ..., device_handlers: _Optional[_Iterable[str]] = ..., storage_handlers: _Optional[_Iterable[str]] = ...) -> None: ...

class CgroupMetrics(_message.Message):
    __slots__ = ["cpu", "io", "memory", "memory_events", "pids"]
    CPU_FIELD_NUMBER: _ClassVar[int]
    IO_FIELD_NUMBER: _ClassVar[int]
    MEMORY_EVENTS_FIELD_NUMBER: _ClassVar[int]
    MEMORY_FIELD_NUMBER: _ClassVar[int]
    PIDS_FIELD_NUMBER: _ClassVar[int]
    cpu: CpuStat
    io: IOStat
    memory: MemoryStat
    memory_events: MemoryEvents
    pids: PidsStat
    def __init__(self, pids: _Optional[_Union[PidsStat, _Mapping]] = ..., cpu: _Optional[_Union[CpuStat, _Mapping]] = ..., memory: _Optional[_Union[MemoryStat, _Mapping]] = ..., io: _Optional[_Union[IOStat, _Mapping]] = ..., memory_events: _Optional[_Union[MemoryEvents, _Mapping]] = ...) -> None: ...

class CheckRequest(_message.Message):
    __slots__ = ["service"]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    service: str
    def __init__(self, service: _Optional[str] = ...) -> None: ...

class CloseStdinRequest(_message.Message):
    __slots__ = ["container_id", "exec_id"]
    CONTAINER_ID_FIELD_NUMBER: _ClassVar[int]
    EXEC_ID_FIELD_NUMBER: _ClassVar[int]
    container_id: str
    exec_id: str
    def __init__(self, container_id: _Optional[str] = ..., exec_id: _Optional[str] = ...) -> None: ...

class CpuStat(_message.Message):
    __slots__ = ["nr_periods", "nr_throttled", "system_usec", "throttled_usec", "usage_usec", "user_usec"]
    NR_PERIODS_FIELD_NUMBER: _ClassVar[int]
    NR_THROTTLED_FIELD_NUMBER: _ClassVar[int]
    SYSTEM_USEC_FIELD_NUMBER: _ClassVar[int]
    THROTTLED_USEC_FIELD_NUMBER: _ClassVar[int]
    USAGE_USEC_FIELD_NUMBER: _ClassVar[int]
    USER_USEC_FIELD_NUMBER: _ClassVar[int]
    nr_periods: int
    nr_throttled: int
    system_usec: int
    throttled_usec: int
    usage_usec: int
    user_usec: int
    def __init__(self, usage_usec: _Optional[int] = ..., user_usec: _Optional[int] = ..., system_usec: _Optional[int] = ..., nr_periods: _Optional[int] = ..., nr_throttled: _Optional[int] = ..., throttled_usec: _Optional[int] = ...) -> None: ...

class CreateContainerRequest(_message.Message):
    __slots__ = ["container_id", "exec_id", "oci_spec_json", "storages"]
    CONTAINER_ID_FIELD_NUMBER: _ClassVar[int]
    EXEC_ID_FIELD_NUMBER: _ClassVar[int]
    OCI_SPEC_JSON_FIELD_NUMBER: _ClassVar[int]
    STORAGES_FIELD_NUMBER: _ClassVar[int]
    container_id: str
    exec_id: str
    oci_spec_json: bytes
    storages: _containers.RepeatedCompositeFieldContainer[Storage]
    def __init__(self, container_id: _Optional[str] = ..., exec_id: _Optional[str] = ..., storages: _Optional[_Iterable[_Union[Storage, _Mapping]]] = ..., oci_spec_json: _Optional[bytes] = ...) -> None: ...

class CreateSandboxRequest(_message.Message):
    __slots__ = ["hostname", "sandbox_id", "storages"]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    SANDBOX_ID_FIELD_NUMBER: _ClassVar[int]
    STORAGES_FIELD_NUMBER: _ClassVar[int]
    hostname: str
    sandbox_id: str
    storages: _containers.RepeatedCompositeFieldContainer[Storage]
    def __init__(self, hostname: _Optional[str] = ..., storages: _Optional[_Iterable[_Union[Storage, _Mapping]]] = ..., sandbox_id: _Optional[str] = ...) -> None: ...

class DestroySandboxRequest(_message.Message):
    __slots__ = []
    def __init__(self) -> None: ...

class Empty(_message.Message):
    __slots__ = []
    def __init__(self) -> None: ...

class ExecProcessRequest(_message.Message):
    __slots__ = ["container_id", "exec_id", "process_json"]
    CONTAINER_ID_FIELD_NUMBER: _ClassVar[int]
    EXEC_ID_FIELD_NUMBER: _ClassVar[int]
    PROCESS_JSON_FIELD_NUMBER: _ClassVar[int]
    container_id: str
    exec_id: str
    process_json: bytes
    def __init__(self, container_id: _Optional[str] = ..., exec_id: _Optional[str] = ..., process_json: _Optional[bytes] = ...) -> None: ...

class GetMetricsRequest(_message.Message):
    __slots__ = []
    def __init__(self) -> None: ...

class GuestDetailsRequest(_message.Message):
    __slots__ = ["mem_block_size", "mem_hotplug_probe"]
    MEM_BLOCK_SIZE_FIELD_NUMBER: _ClassVar[int]
    MEM_HOTPLUG_PROBE_FIELD_NUMBER: _ClassVar[int]
    mem_block_size: bool
    mem_hotplug_probe: bool
    def __init__(self, mem_block_size: bool = ..., mem_hotplug_probe: bool = ...) -> None: ...

class GuestDetailsResponse(_message.Message):
    __slots__ = ["agent_details", "agent_serving_uptime", "agent_started_uptime", "kernel_release", "mem_block_size_bytes", "mem_total_bytes", "online_cpus", "support_mem_hotplug_probe"]
    AGENT_DETAILS_FIELD_NUMBER: _ClassVar[int]
    AGENT_SERVING_UPTIME_FIELD_NUMBER: _ClassVar[int]
    AGENT_STARTED_UPTIME_FIELD_NUMBER: _ClassVar[int]
    KERNEL_RELEASE_FIELD_NUMBER: _ClassVar[int]
    MEM_BLOCK_SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MEM_TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    ONLINE_CPUS_FIELD_NUMBER: _ClassVar[int]
    SUPPORT_MEM_HOTPLUG_PROBE_FIELD_NUMBER: _ClassVar[int]
    agent_details: AgentDetails
    agent_serving_uptime: float
    agent_started_uptime: float
    kernel_release: str
    mem_block_size_bytes: int
    mem_total_bytes: int
    online_cpus: int
    support_mem_hotplug_probe: bool
    def __init__(self, mem_block_size_bytes: _Optional[int] = ..., agent_details: _Optional[_Union[AgentDetails, _Mapping]] = ..., support_mem_hotplug_probe: bool = ..., kernel_release: _Optional[str] = ..., online_cpus: _Optional[int] = ..., mem_total_bytes: _Optional[int] = ..., agent_started_uptime: _Optional[float] = ..., agent_serving_uptime: _Optional[float] = ...) -> None: ...

class HealthCheckResponse(_message.Message):
    __slots__ = ["status"]
    class ServingStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = []
    NOT_SERVING: HealthCheckResponse.ServingStatus
    SERVING: HealthCheckResponse.ServingStatus
    STATUS_FIELD_NUMBER: _ClassVar[int]
    UNKNOWN: HealthCheckResponse.ServingStatus
    status: HealthCheckResponse.ServingStatus
    def __init__(self, status: _Optional[_Union[HealthCheckResponse.ServingStatus, str]] = ...) -> None: ...

class IOEntry(_message.Message):
    __slots__ = ["major", "minor", "rbytes", "rios", "wbytes", "wios"]
    MAJOR_FIELD_NUMBER: _ClassVar[int]
    MINOR_FIELD_NUMBER: _ClassVar[int]
    RBYTES_FIELD_NUMBER: _ClassVar[int]
    RIOS_FIELD_NUMBER: _ClassVar[int]
    WBYTES_FIELD_NUMBER: _ClassVar[int]
    WIOS_FIELD_NUMBER: _ClassVar[int]
    major: int
    minor: int
    rbytes: int
    rios: int
    wbytes: int
    wios: int
    def __init__(self, major: _Optional[int] = ..., minor: _Optional[int] = ..., rbytes: _Optional[int] = ..., wbytes: _Optional[int] = ..., rios: _Optional[int] = ..., wios: _Optional[int] = ...) -> None: ...

class IOStat(_message.Message):
    __slots__ = ["usage"]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    usage: _containers.RepeatedCompositeFieldContainer[IOEntry]
    def __init__(self, usage: _Optional[_Iterable[_Union[IOEntry, _Mapping]]] = ...) -> None: ...

class IPAddress(_message.Message):
    __slots__ = ["address", "prefix_len"]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    PREFIX_LEN_FIELD_NUMBER: _ClassVar[int]
    address: str
    prefix_len: int
    def __init__(self, address: _Optional[str] = ..., prefix_len: _Optional[int] = ...) -> None: ...

class Interface(_message.Message):
    __slots__ = ["addresses", "mac", "mtu", "name"]
    ADDRESSES_FIELD_NUMBER: _ClassVar[int]
    MAC_FIELD_NUMBER: _ClassVar[int]
    MTU_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    addresses: _containers.RepeatedCompositeFieldContainer[IPAddress]
    mac: str
    mtu: int
    name: str
    def __init__(self, name: _Optional[str] = ..., mac: _Optional[str] = ..., mtu: _Optional[int] = ..., addresses: _Optional[_Iterable[_Union[IPAddress, _Mapping]]] = ...) -> None: ...

class ListProcessesRequest(_message.Message):
    __slots__ = ["container_id"]
    CONTAINER_ID_FIELD_NUMBER: _ClassVar[int]
    container_id: str
    def __init__(self, container_id: _Optional[str] = ...) -> None: ...

class ListProcessesResponse(_message.Message):
    __slots__ = ["pids"]
    PIDS_FIELD_NUMBER: _ClassVar[int]
    pids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, pids: _Optional[_Iterable[int]] = ...) -> None: ...

class MemoryEvents(_message.Message):
    __slots__ = ["high", "low", "max", "oom", "oom_kill"]
    HIGH_FIELD_NUMBER: _ClassVar[int]
    LOW_FIELD_NUMBER: _ClassVar[int]
    MAX_FIELD_NUMBER: _ClassVar[int]
    OOM_FIELD_NUMBER: _ClassVar[int]
    OOM_KILL_FIELD_NUMBER: _ClassVar[int]
    high: int
    low: int
    max: int
    oom: int
    oom_kill: int
    def __init__(self, low: _Optional[int] = ..., high: _Optional[int] = ..., max: _Optional[int] = ..., oom: _Optional[int] = ..., oom_kill: _Optional[int] = ...) -> None: ...

class MemoryStat(_message.Message):
    __slots__ = ["active_anon", "active_file", "anon", "anon_thp", "file", "file_dirty", "file_mapped", "file_writeback", "inactive_anon", "inactive_file", "kernel_stack", "pgactivate", "pgdeactivate", "pgfault", "pglazyfree", "pglazyfreed", "pgmajfault", "pgrefill", "pgscan", "pgsteal", "shmem", "slab", "slab_reclaimable", "slab_unreclaimable", "sock", "swap_limit", "swap_usage", "thp_collapse_alloc", "thp_fault_alloc", "unevictable", "usage", "usage_limit", "workingset_activate", "workingset_nodereclaim", "workingset_refault"]
    ACTIVE_ANON_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_FILE_FIELD_NUMBER: _ClassVar[int]
    ANON_FIELD_NUMBER: _ClassVar[int]
    ANON_THP_FIELD_NUMBER: _ClassVar[int]
    FILE_DIRTY_FIELD_NUMBER: _ClassVar[int]
    FILE_FIELD_NUMBER: _ClassVar[int]
    FILE_MAPPED_FIELD_NUMBER: _ClassVar[int]
    FILE_WRITEBACK_FIELD_NUMBER: _ClassVar[int]
    INACTIVE_ANON_FIELD_NUMBER: _ClassVar[int]
    INACTIVE_FILE_FIELD_NUMBER: _ClassVar[int]
    KERNEL_STACK_FIELD_NUMBER: _ClassVar[int]
    PGACTIVATE_FIELD_NUMBER: _ClassVar[int]
    PGDEACTIVATE_FIELD_NUMBER: _ClassVar[int]
    PGFAULT_FIELD_NUMBER: _ClassVar[int]
    PGLAZYFREED_FIELD_NUMBER: _ClassVar[int]
    PGLAZYFREE_FIELD_NUMBER: _ClassVar[int]
    PGMAJFAULT_FIELD_NUMBER: _ClassVar[int]
    PGREFILL_FIELD_NUMBER: _ClassVar[int]
    PGSCAN_FIELD_NUMBER: _ClassVar[int]
    PGSTEAL_FIELD_NUMBER: _ClassVar[int]
    SHMEM_FIELD_NUMBER: _ClassVar[int]
    SLAB_FIELD_NUMBER: _ClassVar[int]
    SLAB_RECLAIMABLE_FIELD_NUMBER: _ClassVar[int]
    SLAB_UNRECLAIMABLE_FIELD_NUMBER: _ClassVar[int]
    SOCK_FIELD_NUMBER: _ClassVar[int]
    SWAP_LIMIT_FIELD_NUMBER: _ClassVar[int]
    SWAP_USAGE_FIELD_NUMBER: _ClassVar[int]
    THP_COLLAPSE_ALLOC_FIELD_NUMBER: _ClassVar[int]
    THP_FAULT_ALLOC_FIELD_NUMBER: _ClassVar[int]
    UNEVICTABLE_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    USAGE_LIMIT_FIELD_NUMBER: _ClassVar[int]
    WORKINGSET_ACTIVATE_FIELD_NUMBER: _ClassVar[int]
    WORKINGSET_NODERECLAIM_FIELD_NUMBER: _ClassVar[int]
    WORKINGSET_REFAULT_FIELD_NUMBER: _ClassVar[int]
    active_anon: int
    active_file: int
    anon: int
    anon_thp: int
    file: int
    file_dirty: int
    file_mapped: int
    file_writeback: int
    inactive_anon: int
    inactive_file: int
    kernel_stack: int
    pgactivate: int
    pgdeactivate: int
    pgfault: int
    pglazyfree: int
    pglazyfreed: int
    pgmajfault: int
    pgrefill: int
    pgscan: int
    pgsteal: int
    shmem: int
    slab: int
    slab_reclaimable: int
    slab_unreclaimable: int
    sock: int
    swap_limit: int
    swap_usage: int
    thp_collapse_alloc: int
    thp_fault_alloc: int
    unevictable: int
    usage: int
    usage_limit: int
    workingset_activate: int
    workingset_nodereclaim: int
    workingset_refault: int
    def __init__(self, anon: _Optional[int] = ..., file: _Optional[int] = ..., kernel_stack: _Optional[int] = ..., slab: _Optional[int] = ..., sock: _Optional[int] = ..., shmem: _Optional[int] = ..., file_mapped: _Optional[int] = ..., file_dirty: _Optional[int] = ..., file_writeback: _Optional[int] = ..., anon_thp: _Optional[int] = ..., inactive_anon: _Optional[int] = ..., active_anon: _Optional[int] = ..., inactive_file: _Optional[int] = ..., active_file: _Optional[int] = ..., unevictable: _Optional[int] = ..., slab_reclaimable: _Optional[int] = ..., slab_unreclaimable: _Optional[int] = ..., pgfault: _Optional[int] = ..., pgmajfault: _Optional[int] = ..., workingset_refault: _Optional[int] = ..., workingset_activate: _Optional[int] = ..., workingset_nodereclaim: _Optional[int] = ..., pgrefill: _Optional[int] = ..., pgscan: _Optional[int] = ..., pgsteal: _Optional[int] = ..., pgactivate: _Optional[int] = ..., pgdeactivate: _Optional[int] = ..., pglazyfree: _Optional[int] = ..., pglazyfreed: _Optional[int] = ..., thp_fault_alloc: _Optional[int] = ..., thp_collapse_alloc: _Optional[int] = ..., usage: _Optional[int] = ..., usage_limit: _Optional[int] = ..., swap_usage: _Optional[int] = ..., swap_limit: _Optional[int] = ...) -> None: ...

class Metrics(_message.Message):
    __slots__ = ["files"]
    class FilesEntry(_message.Message):
        __slots__ = ["key", "value"]
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    FILES_FIELD_NUMBER: _ClassVar[int]
    files: _containers.ScalarMap[str, str]
    def __init__(self, files: _Optional[_Mapping[str, str]] = ...) -> None: ...

class OnlineCPUMemRequest(_message.Message):
    __slots__ = ["cpus", "mem_bytes", "timeout_ms"]
    CPUS_FIELD_NUMBER: _ClassVar[int]
    MEM_BYTES_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    cpus: int
    mem_bytes: int
    timeout_ms: int
    def __init__(self, cpus: _Optional[int] = ..., mem_bytes: _Optional[int] = ..., timeout_ms: _Optional[int] = ...) -> None: ...

class OnlineCPUMemResponse(_message.Message):
    __slots__ = ["mem_total_bytes", "online_cpus"]
    MEM_TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    ONLINE_CPUS_FIELD_NUMBER: _ClassVar[int]
    mem_total_bytes: int
    online_cpus: int
    def __init__(self, online_cpus: _Optional[int] = ..., mem_total_bytes: _Optional[int] = ...) -> None: ...

class PauseContainerRequest(_message.Message):
    __slots__ = ["container_id"]
    CONTAINER_ID_FIELD_NUMBER: _ClassVar[int]
    container_id: str
    def __init__(self, container_id: _Optional[str] = ...) -> None: ...

class PidsStat(_message.Message):
    __slots__ = ["current", "limit"]
    CURRENT_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    current: int
    limit: int
    def __init__(self, current: _Optional[int] = ..., limit: _Optional[int] = ...) -> None: ...

class PortForwardCloseRequest(_message.Message):
    __slots__ = ["stream_id", "write_only"]
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    WRITE_ONLY_FIELD_NUMBER: _ClassVar[int]
    stream_id: int
    write_only: bool
    def __init__(self, stream_id: _Optional[int] = ..., write_only: bool = ...) -> None: ...

class PortForwardOpenRequest(_message.Message):
    __slots__ = ["port"]
    PORT_FIELD_NUMBER: _ClassVar[int]
    port: int
    def __init__(self, port: _Optional[int] = ...) -> None: ...

class PortForwardOpenResponse(_message.Message):
    __slots__ = ["stream_id"]
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    stream_id: int
    def __init__(self, stream_id: _Optional[int] = ...) -> None: ...

class PortForwardReadRequest(_message.Message):
    __slots__ = ["len", "stream_id"]
    LEN_FIELD_NUMBER: _ClassVar[int]
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    len: int
    stream_id: int
    def __init__(self, stream_id: _Optional[int] = ..., len: _Optional[int] = ...) -> None: ...

class PortForwardWriteRequest(_message.Message):
    __slots__ = ["data", "stream_id"]
    DATA_FIELD_NUMBER: _ClassVar[int]
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    stream_id: int
    def __init__(self, stream_id: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class ReadStreamRequest(_message.Message):
    __slots__ = ["container_id", "exec_id", "len"]
    CONTAINER_ID_FIELD_NUMBER: _ClassVar[int]
    EXEC_ID_FIELD_NUMBER: _ClassVar[int]
    LEN_FIELD_NUMBER: _ClassVar[int]
    container_id: str
    exec_id: str
    len: int
    def __init__(self, container_id: _Optional[str] = ..., exec_id: _Optional[str] = ..., len: _Optional[int] = ...) -> None: ...

class ReadStreamResponse(_message.Message):
    __slots__ = ["data"]
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    def __init__(self, data: _Optional[bytes] = ...) -> None: ...

class RemoveContainerRequest(_message.Message):
    __slots__ = ["container_id", "timeout"]
    CONTAINER_ID_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    container_id: str
    timeout: int
    def __init__(self, container_id: _Optional[str] = ..., timeout: _Optional[int] = ...) -> None: ...

class RemoveProcessRequest(_message.Message):
    __slots__ = ["container_id", "exec_id"]
    CONTAINER_ID_FIELD_NUMBER: _ClassVar[int]
    EXEC_ID_FIELD_NUMBER: _ClassVar[int]
    container_id: str
    exec_id: str
    def __init__(self, container_id: _Optional[str] = ..., exec_id: _Optional[str] = ...) -> None: ...

class ReseedRandomDevRequest(_message.Message):
    __slots__ = ["data"]
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    def __init__(self, data: _Optional[bytes] = ...) -> None: ...

class ResumeContainerRequest(_message.Message):
    __slots__ = ["container_id"]
    CONTAINER_ID_FIELD_NUMBER: _ClassVar[int]
    container_id: str
    def __init__(self, container_id: _Optional[str] = ...) -> None: ...

class Route(_message.Message):
    __slots__ = ["dest", "device", "family", "gateway", "scope_link"]
    DEST_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    FAMILY_FIELD_NUMBER: _ClassVar[int]
    GATEWAY_FIELD_NUMBER: _ClassVar[int]
    SCOPE_LINK_FIELD_NUMBER: _ClassVar[int]
    dest: str
    device: str
    family: int
    gateway: str
    scope_link: bool
    def __init__(self, dest: _Optional[str] = ..., gateway: _Optional[str] = ..., device: _Optional[str] = ..., family: _Optional[int] = ..., scope_link: bool = ...) -> None: ...

class SetGuestDateTimeRequest(_message.Message):
    __slots__ = ["sec", "usec"]
    SEC_FIELD_NUMBER: _ClassVar[int]
    USEC_FIELD_NUMBER: _ClassVar[int]
    sec: int
    usec: int
    def __init__(self, sec: _Optional[int] = ..., usec: _Optional[int] = ...) -> None: ...

class SetupNetworkRequest(_message.Message):
    __slots__ = ["hostname", "interfaces", "resolv_conf", "routes"]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    INTERFACES_FIELD_NUMBER: _ClassVar[int]
    RESOLV_CONF_FIELD_NUMBER: _ClassVar[int]
    ROUTES_FIELD_NUMBER: _ClassVar[int]
    hostname: str
    interfaces: _containers.RepeatedCompositeFieldContainer[Interface]
    resolv_conf: str
    routes: _containers.RepeatedCompositeFieldContainer[Route]
    def __init__(self, interfaces: _Optional[_Iterable[_Union[Interface, _Mapping]]] = ..., routes: _Optional[_Iterable[_Union[Route, _Mapping]]] = ..., hostname: _Optional[str] = ..., resolv_conf: _Optional[str] = ...) -> None: ...

class SignalProcessRequest(_message.Message):
    __slots__ = ["all", "container_id", "exec_id", "signal"]
    ALL_FIELD_NUMBER: _ClassVar[int]
    CONTAINER_ID_FIELD_NUMBER: _ClassVar[int]
    EXEC_ID_FIELD_NUMBER: _ClassVar[int]
    SIGNAL_FIELD_NUMBER: _ClassVar[int]
    all: bool
    container_id: str
    exec_id: str
    signal: int
    def __init__(self, container_id: _Optional[str] = ..., exec_id: _Optional[str] = ..., signal: _Optional[int] = ..., all: bool = ...) -> None: ...

class StartContainerRequest(_message.Message):
    __slots__ = ["container_id"]
    CONTAINER_ID_FIELD_NUMBER: _ClassVar[int]
    container_id: str
    def __init__(self, container_id: _Optional[str] = ...) -> None: ...

class StatsContainerRequest(_message.Message):
    __slots__ = ["container_id"]
    CONTAINER_ID_FIELD_NUMBER: _ClassVar[int]
    container_id: str
    def __init__(self, container_id: _Optional[str] = ...) -> None: ...

class StatsContainerResponse(_message.Message):
    __slots__ = ["metrics"]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    metrics: CgroupMetrics
    def __init__(self, metrics: _Optional[_Union[CgroupMetrics, _Mapping]] = ...) -> None: ...

class Storage(_message.Message):
    __slots__ = ["driver", "fstype", "mount_point", "options", "source"]
    DRIVER_FIELD_NUMBER: _ClassVar[int]
    FSTYPE_FIELD_NUMBER: _ClassVar[int]
    MOUNT_POINT_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    driver: str
    fstype: str
    mount_point: str
    options: _containers.RepeatedScalarFieldContainer[str]
    source: str
    def __init__(self, driver: _Optional[str] = ..., source: _Optional[str] = ..., fstype: _Optional[str] = ..., options: _Optional[_Iterable[str]] = ..., mount_point: _Optional[str] = ...) -> None: ...

class TtyWinResizeRequest(_message.Message):
    __slots__ = ["column", "container_id", "exec_id", "row"]
    COLUMN_FIELD_NUMBER: _ClassVar[int]
    CONTAINER_ID_FIELD_NUMBER: _ClassVar[int]
    EXEC_ID_FIELD_NUMBER: _ClassVar[int]
    ROW_FIELD_NUMBER: _ClassVar[int]
    column: int
    container_id: str
    exec_id: str
    row: int
    def __init__(self, container_id: _Optional[str] = ..., exec_id: _Optional[str] = ..., row: _Optional[int] = ..., column: _Optional[int] = ...) -> None: ...

class UpdateContainerRequest(_message.Message):
    __slots__ = ["container_id", "resources_json"]
    CONTAINER_ID_FIELD_NUMBER: _ClassVar[int]
    RESOURCES_JSON_FIELD_NUMBER: _ClassVar[int]
    container_id: str
    resources_json: bytes
    def __init__(self, container_id: _Optional[str] = ..., resources_json: _Optional[bytes] = ...) -> None: ...

class VersionCheckResponse(_message.Message):
    __slots__ = ["agent_version", "grpc_version"]
    AGENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    GRPC_VERSION_FIELD_NUMBER: _ClassVar[int]
    agent_version: str
    grpc_version: str
    def __init__(self, grpc_version: _Optional[str] = ..., agent_version: _Optional[str] = ...) -> None: ...

class WaitProcessRequest(_message.Message):
    __slots__ = ["container_id", "exec_id"]
    CONTAINER_ID_FIELD_NUMBER: _ClassVar[int]
    EXEC_ID_FIELD_NUMBER: _ClassVar[int]
    container_id: str
    exec_id: str
    def __init__(self, container_id: _Optional[str] = ..., exec_id: _Optional[str] = ...) -> None: ...

class WaitProcessResponse(_message.Message):
    __slots__ = ["oom_killed", "status"]
    OOM_KILLED_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    oom_killed: bool
    status: int
    def __init__(self, status: _Optional[int] = ..., oom_killed: bool = ...) -> None: ...

class WriteStreamRequest(_message.Message):
    __slots__ = ["container_id", "data", "exec_id"]
    CONTAINER_ID_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    EXEC_ID_FIELD_NUMBER: _ClassVar[int]
    container_id: str
    data: bytes
    exec_id: str
    def __init__(self, container_id: _Optional[str] = ..., exec_id: _Optional[str] = ..., data: _Optional[bytes] = ...) -> None: ...

class WriteStreamResponse(_message.Message):
    __slots__ = ["len"]
    LEN_FIELD_NUMBER: _ClassVar[int]
    len: int
    def __init__(self, len: _Optional[int] = ...) -> None: ...
