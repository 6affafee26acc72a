// ES module face of lib/supervisor.js (one module instance: this only re-exports the CommonJS one).
import supervisor from './supervisor.js';

export const { attach, Supervised, NotSupervisedError, ParentGoneError, MAGIC, VERSION, reply, takeControl } =
  supervisor;
export default supervisor;
