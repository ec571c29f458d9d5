#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// A mutex with a condition variable guarding a value: the coordination the worker pipelines need
/// (the standard library's `Mutex` has no way to wait).
package final class ConditionLock<State>: @unchecked Sendable {
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>
    private let condition: UnsafeMutablePointer<pthread_cond_t>
    private var state: State

    package init(_ initial: State) {
        state = initial
        mutex = .allocate(capacity: 1)
        condition = .allocate(capacity: 1)
        pthread_mutex_init(mutex, nil)
        pthread_cond_init(condition, nil)
    }

    deinit {
        pthread_cond_destroy(condition)
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
        condition.deallocate()
    }

    /// Runs `body` with the state locked, then wakes every waiter.
    package func withLock<R>(_ body: (inout State) throws -> R) rethrows -> R {
        pthread_mutex_lock(mutex)
        defer {
            pthread_cond_broadcast(condition)
            pthread_mutex_unlock(mutex)
        }
        return try body(&state)
    }

    /// Waits until `ready` holds, then runs `body` with the state locked and wakes every waiter.
    package func withLock<R>(when ready: (State) -> Bool, _ body: (inout State) throws -> R) rethrows -> R {
        pthread_mutex_lock(mutex)
        defer {
            pthread_cond_broadcast(condition)
            pthread_mutex_unlock(mutex)
        }
        while !ready(state) {
            pthread_cond_wait(condition, mutex)
        }
        return try body(&state)
    }
}

/// The state of a worker pipeline that stops at its first failure.
protocol PipelineState {
    /// The first error any worker met; workers stop claiming work once it is set.
    var failure: (any Error)? { get set }
}

extension ConditionLock where State: PipelineState {
    /// Records `error` unless an earlier one was recorded.
    func recordFailure(_ error: any Error) {
        withLock { s in
            if s.failure == nil { s.failure = error }
        }
    }

    /// The final state once the workers are done; throws the first failure.
    func finalState() throws -> State {
        let state = withLock { $0 }
        if let failure = state.failure { throw failure }
        return state
    }
}
